"""ShareGPT4V: detailed GPT-4V captions, read as ``description``-style units.

Its image paths carry the sub-folder of the dataset they come from, so the image root is the
folder that holds all of them (as ShareGPT4V's own ``data/`` layout does).
"""

from __future__ import annotations

from collections.abc import Iterator

from bpo_data.recipe import SourceSpec, TextSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources.llava_format import FormatFacts, read_source

SUBFOLDERS = (
    "coco/train2017",
    "sam/images",
    "llava/llava_pretrain/images",
    "wikiart/images",
    "share_textvqa/images",
    "web-celebrity/images",
    "web-landmark/images",
)

FACTS = FormatFacts(
    label="ShareGPT4V",
    style="description",
    image_layout=(
        "ShareGPT4V image paths start with their sub-folder (" + ", ".join(SUBFOLDERS) + "), "
        "so the image root is the folder that contains those sub-folders"
    ),
)


def read_units(
    spec: SourceSpec,
    *,
    seed: int,
    data: str | None = None,
    image_root: str | None = None,
    limits: TextSpec | None = None,
) -> Iterator[Unit | Reject]:
    return read_source(spec, FACTS, seed=seed, data=data, image_root=image_root, limits=limits)
