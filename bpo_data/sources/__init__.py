"""Source readers: one small module per dataset, all reading the LLaVA conversation layout.

``read_units`` is the single entry point the pipeline calls; ``spec.format`` picks the module.
Readers stream their file and yield a ``Unit`` per (record, turn) or a ``Reject`` saying why a
record or turn cannot be used — bad input never stops a run. ``source_files`` says which files a
source reads, so a run can record (and a rerun compare) what each source was made from.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from pathlib import Path

from bpo_data.recipe import SourceSpec, TextSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources import llava_format, llava_instruct, llavar, sample, sharegptv

_READERS = {
    "sharegptv": sharegptv.read_units,
    "llavar": llavar.read_units,
    "llava-instruct": llava_instruct.read_units,
    "llava": llava_format.read_units,
    "sample": sample.read_units,
}
_FACTS = {
    "sharegptv": sharegptv.FACTS,
    "llavar": llavar.FACTS,
    "llava-instruct": llava_instruct.FACTS,
    "llava": llava_format.LLAVA,
}
SOURCE_FORMATS = frozenset(_READERS)
# Other spellings of a source's name: the paper and the Hub call ShareGPT4V by its full name.
ALIASES = {
    "sharegpt4v": "sharegptv",
    "llava_instruct": "llava-instruct",
    "llava-instruct-150k": "llava-instruct",
}


def canonical_name(name: str, known: Iterable[str]) -> str:
    """``name`` as one of ``known`` (an alias such as ``sharegpt4v`` becomes ``sharegptv``).

    Raises ``ValueError`` naming the closest known names, so a typo gets a did-you-mean.
    """
    choices = list(known)
    if name in choices:
        return name
    alias = ALIASES.get(name.lower())
    if alias in choices:
        return alias
    raise ValueError(f"unknown source {name!r}{did_you_mean(name, choices)}; known: {', '.join(choices)}")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (aliases included), or an empty string."""
    choices = list(choices)
    spellings = {c: c for c in choices} | {a: c for a, c in ALIASES.items() if c in choices}
    close = difflib.get_close_matches(name.lower(), list(spellings), n=1, cutoff=0.6)
    return f" (did you mean {spellings[close[0]]!r}?)" if close else ""


def _check_format(spec: SourceSpec) -> None:
    if spec.format not in _READERS:
        raise ValueError(
            f"source {spec.name!r} has unknown format {spec.format!r}"
            f"{did_you_mean(spec.format, SOURCE_FORMATS)}; use one of {sorted(SOURCE_FORMATS)}"
        )


def read_units(
    spec: SourceSpec,
    *,
    seed: int,
    data: str | None = None,
    image_root: str | None = None,
    limits: TextSpec | None = None,
) -> Iterator[Unit | Reject]:
    """The units of one source. ``data``/``image_root`` override the recipe's paths (CLI flags);
    ``limits`` are the recipe's bounds on a unit's text (defaults when None).

    Paths are checked when this is called, so a wrong flag fails before any work starts.
    """
    _check_format(spec)
    return _READERS[spec.format](spec, seed=seed, data=data, image_root=image_root, limits=limits)


def source_files(
    spec: SourceSpec, data: str | None = None, image_root: str | None = None
) -> tuple[Path, Path]:
    """The data file and image root a source reads (absolute, resolved), checked as ``read_units`` does."""
    _check_format(spec)
    if spec.format == "sample":
        return sample.sample_file(spec, data, image_root)
    return llava_format.source_paths(spec, _FACTS[spec.format], data, image_root)
