"""A shard's plan: which units it makes with which negative types, and when a rerun may trust the last one.

The plan is a bottom-k sample over *every* unit of each source, so making it reads the sources
whole (22 s for the 479,154 units of the full world recipe). A rerun of a finished shard needs
none of that: when the plan record says the shard finished, and nothing it was made from has
changed since, the shard is finished again without reading a source or a shard file.

"Nothing changed" is checked the way build tools check their inputs, by identity rather than by
content: the plan's basis (this bpo-data version, the recipe's *what*, the selected sources, their
data files' size, content fingerprint and modification time, and the shard) and the size and
modification time of every pairs and rejects file of the folder (any of them may hold keys this
shard counts as done, since a rerun may change the shard count). Any difference, and the rerun
reads everything as a first run does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo_data import __version__
from bpo_data.hashing import shard_of
from bpo_data.inject.cooccurrence import MAX_ANSWERS, CoOccurrence
from bpo_data.recipe import Recipe, SourceSpec
from bpo_data.sampling import bottom_k, negative_types
from bpo_data.schema import NegativeType, Reject, Unit, pair_key


@dataclass
class Plan:
    """This shard's share of the recipe's sample: unit key → the negative types it gets."""

    chosen: dict[str, list[NegativeType]]
    units_read: int
    units_by_source: dict[str, int] = field(default_factory=dict)
    # What each source's answers name together, when the rules injector will add objects.
    cooccurrence: dict[str, CoOccurrence] = field(default_factory=dict)

    def pair_keys(self) -> list[str]:
        return sorted(pair_key(key, kind) for key, kinds in self.chosen.items() for kind in kinds)


def make_plan(
    recipe: Recipe,
    specs: list[SourceSpec],
    read: Callable[[SourceSpec], Iterable[Unit | Reject]],
    index: int,
    num_shards: int,
    count_objects: bool = False,
) -> Plan:
    """The first pass: each source's bottom-k sample (over all its units), kept where this shard owns it.

    ``count_objects``: also count which objects each source's answers name together (over its first
    units, not the sample, so each shard counts the same), for the rules injector.
    """
    chosen: dict[str, list[NegativeType]] = {}
    counts: Counter = Counter()
    tables: dict[str, CoOccurrence] = {}
    if count_objects:
        from bpo_data.inject.rules import classes_named

    def keys(spec: SourceSpec):
        table = tables.setdefault(spec.name, CoOccurrence()) if count_objects else None
        for item in read(spec):
            if isinstance(item, Unit):
                counts[spec.name] += 1
                if table is not None and table.answers < MAX_ANSWERS:
                    table.add(classes_named(item.answer))
                yield item.key

    for spec in specs:
        if spec.quota == 0:
            continue
        for key in bottom_k(keys(spec), spec.quota, recipe.seed):
            if shard_of(key, num_shards) == index:
                chosen[key] = negative_types(key, spec, recipe.seed)
    by_source = {s.name: counts[s.name] for s in specs if s.quota != 0}
    return Plan(chosen, sum(counts.values()), by_source, tables)


def plan_basis(
    recipe: Recipe, specs: list[SourceSpec], sources: dict[str, dict[str, Any]], index: int, num_shards: int
) -> str:
    """A digest of everything the plan is a function of (``sources``: the manifest's source records)."""
    files = {
        name: {**record, "mtime_ns": os.stat(record["data"]).st_mtime_ns} for name, record in sources.items()
    }
    basis = {
        "bpo_data": __version__,
        "what": recipe.what(),
        "sources": [spec.name for spec in specs],
        "files": files,
        "shard": [index, num_shards],
    }
    return hashlib.blake2b(json.dumps(basis, sort_keys=True).encode(), digest_size=16).hexdigest()


def shard_files_stamp(out_dir: Path) -> dict[str, list[int]]:
    """Size and modification time of each pairs and rejects file in ``out_dir`` (done keys come from them)."""
    stamp = {}
    for path in sorted([*out_dir.glob("pairs-*.jsonl"), *out_dir.glob("rejects-*.jsonl")]):
        status = path.stat()
        stamp[path.name] = [status.st_size, status.st_mtime_ns]
    return stamp


def finished_plan(previous: dict[str, Any] | None, basis: str, out_dir: Path) -> dict[str, Any] | None:
    """The last plan record if its shard finished and nothing the plan depends on changed since, else None."""
    if not previous or previous.get("basis") != basis or "finished_with" not in previous:
        return None
    if previous["finished_with"] != shard_files_stamp(out_dir):
        return None
    return previous
