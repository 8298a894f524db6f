"""Source readers: one small module per dataset, all reading the LLaVA conversation layout.

``read_units`` is the single entry point the pipeline calls; ``spec.format`` picks the module.
Readers stream their file and yield a ``Unit`` per (record, turn) or a ``Reject`` saying why a
record or turn cannot be used — bad input never stops a run.
"""

from __future__ import annotations

from collections.abc import Iterator

from bpo_data.recipe import SourceSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources import llava_format, llava_instruct, llavar, sample, sharegptv

_READERS = {
    "sharegptv": sharegptv.read_units,
    "llavar": llavar.read_units,
    "llava-instruct": llava_instruct.read_units,
    "llava": llava_format.read_units,
    "sample": sample.read_units,
}
SOURCE_FORMATS = frozenset(_READERS)


def read_units(
    spec: SourceSpec, *, seed: int, data: str | None = None, image_root: str | None = None
) -> Iterator[Unit | Reject]:
    """The units of one source. ``data``/``image_root`` override the recipe's paths (CLI flags).

    Paths are checked when this is called, so a wrong flag fails before any work starts.
    """
    reader = _READERS.get(spec.format)
    if reader is None:
        raise ValueError(
            f"source {spec.name!r} has unknown format {spec.format!r}; use one of {sorted(SOURCE_FORMATS)}"
        )
    return reader(spec, seed=seed, data=data, image_root=image_root)
