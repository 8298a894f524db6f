"""Stable hashes of unit keys: the same recipe picks the same units on any machine, shard count or order.

Python's ``hash()`` is salted per process, so every decision is made on blake2b of the key, the
seed and a purpose tag instead.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def stable_u64(key: str, seed: int, purpose: str) -> int:
    digest = hashlib.blake2b(f"{purpose}\x1f{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stable_uniform(key: str, seed: int, purpose: str) -> float:
    """A number in [0, 1) fixed by (key, seed, purpose)."""
    return stable_u64(key, seed, purpose) / _SCALE


def shard_of(key: str, num_shards: int) -> int:
    """The shard that owns a unit; independent of the seed so resharding never reshuffles sampling."""
    return stable_u64(key, 0, "shard") % num_shards
