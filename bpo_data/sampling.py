"""Which units a recipe takes, and which negative type each one gets.

Both decisions hash the unit key with the recipe seed (bpo_data.hashing), so they do not depend
on the shard count, the order of the file or the machine. A quota keeps the ``quota`` units with
the smallest hashes (a bottom-k sample): exact counts, uniform over the source, bounded memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from bpo_data.hashing import stable_uniform
from bpo_data.recipe import SourceSpec
from bpo_data.schema import NegativeType


def bottom_k(keys: Iterable[str], quota: int | None, seed: int) -> set[str]:
    """The sampled keys: all of them without a quota, else the ``quota`` smallest by hash."""
    if quota is None:
        return set(keys)
    heap: list[tuple[float, str]] = []  # max-heap through negated scores
    for key in keys:
        score = -stable_uniform(key, seed, "sample")
        if len(heap) < quota:
            heapq.heappush(heap, (score, key))
        elif score > heap[0][0]:
            heapq.heapreplace(heap, (score, key))
    return {key for _, key in heap}


def negative_types(unit_key: str, spec: SourceSpec, seed: int) -> list[NegativeType]:
    """``both`` → one pair of each type; a ratio → one type drawn by the key's hash."""
    if spec.negatives == "both":
        return ["weaken", "inject"]
    draw = stable_uniform(unit_key, seed, "negative")
    cumulative = 0.0
    chosen: NegativeType | None = None
    for kind in ("weaken", "inject"):
        share = spec.negatives.get(kind, 0.0)
        if share <= 0:
            continue
        cumulative += share
        chosen = kind
        if draw < cumulative:
            break
    assert chosen is not None
    return [chosen]
