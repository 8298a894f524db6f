"""The embedded sample: a few records in each real source format, about miniature-world pictures.

It lets ``--source sample`` (and the tests) run end to end with nothing downloaded. A recipe
declares one source per embedded file — ``format: sample`` with ``data`` one of
``sharegptv``, ``llavar``, ``llava-instruct`` — and each is read by that format's own rules, so
units look exactly like the real thing: ``source`` is the spec's name, keys are
``<spec name>/<record id>/<turn>``. The files and images ship inside the package under
``bpo_data/world/sample/``, written by ``bpo_data.world.make.make_sample`` from scene graphs of the
miniature world (six of them break its language prior: a dog with no ball, a yellow boat, …), so
the world model's image-weakened answers show its prior; the files are read, never redrawn at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bpo_data.sources.llava_instruct as llava_instruct
import bpo_data.sources.llavar as llavar
import bpo_data.sources.sharegptv as sharegptv
from bpo_data.recipe import SourceSpec, TextSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources.llava_format import FormatFacts, read_source

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "world" / "sample"


@dataclass(frozen=True)
class SampleFile:
    data: Path
    image_root: Path
    facts: FormatFacts


SAMPLE_FILES = {
    "sharegptv": SampleFile(
        SAMPLE_DIR / "sharegptv.json", SAMPLE_DIR / "images" / "sharegptv", sharegptv.FACTS
    ),
    "llavar": SampleFile(SAMPLE_DIR / "llavar.jsonl", SAMPLE_DIR / "images" / "llavar", llavar.FACTS),
    "llava-instruct": SampleFile(
        SAMPLE_DIR / "llava_instruct.json", SAMPLE_DIR / "images" / "llava_instruct", llava_instruct.FACTS
    ),
}


def sample_file(spec: SourceSpec, data: str | None, image_root: str | None) -> tuple[Path, Path]:
    """The embedded file named by ``data`` (or the spec's ``data``) and its image folder."""
    choice = data if data is not None else spec.data
    if choice not in SAMPLE_FILES:
        raise ValueError(
            f"source {spec.name!r} uses the embedded sample, whose 'data' names which file to read: "
            f"one of {sorted(SAMPLE_FILES)} (got {choice!r}); set it in the recipe or pass --data"
        )
    if image_root is not None or spec.image_root is not None:
        raise ValueError(
            f"source {spec.name!r} uses the embedded sample, which ships its own images; "
            "remove its 'image_root' (and do not pass --image-root for it)"
        )
    return SAMPLE_FILES[choice].data, SAMPLE_FILES[choice].image_root


def read_units(
    spec: SourceSpec,
    *,
    seed: int,
    data: str | None = None,
    image_root: str | None = None,
    limits: TextSpec | None = None,
) -> Iterator[Unit | Reject]:
    """Units of the embedded file named by ``data`` (or the spec's ``data``)."""
    path, root = sample_file(spec, data, image_root)
    facts = next(s.facts for s in SAMPLE_FILES.values() if s.data == path)
    return read_source(spec, facts, seed=seed, data=str(path), image_root=str(root), limits=limits)
