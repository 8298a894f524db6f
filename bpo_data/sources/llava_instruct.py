"""LLaVA-Instruct-150K: multi-turn conversations, detailed descriptions and reasoning about COCO images.

Read as ``qa`` units. Image paths are bare COCO train2017 file names, so the image root is COCO's
``train2017`` folder. The file's ``id`` is the COCO image id, shared by the conversation, the
detailed description and the reasoning record made for one image; those are different records,
not duplicates, so repeats are numbered (``<id>~1``, ``<id>~2`` in file order) instead of rejected.
The file is a ~230 MB JSON array and is streamed (see ``llava_format``).
"""

from __future__ import annotations

from collections.abc import Iterator

from bpo_data.recipe import SourceSpec, TextSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources.llava_format import FormatFacts, read_source

FACTS = FormatFacts(
    label="LLaVA-Instruct-150K",
    style="qa",
    image_layout=(
        "LLaVA-Instruct image paths are bare COCO file names, so the image root is COCO's train2017 folder"
    ),
    repeated_ids="number",
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
