"""LLaVAR: questions about text-rich images (posters, covers, signs), read as ``qa`` units.

Its image paths are bare file names, so the image root is the folder holding the images.
"""

from __future__ import annotations

from collections.abc import Iterator

from bpo_data.recipe import SourceSpec, TextSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources.llava_format import FormatFacts, read_source

FACTS = FormatFacts(
    label="LLaVAR",
    style="qa",
    image_layout="LLaVAR image paths are bare file names, so the image root is the folder holding the images",
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
