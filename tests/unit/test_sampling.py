"""Sampling is decided by stable hashes: exact quotas, the same picks whatever the shard count."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from bpo_data.hashing import stable_uniform
from bpo_data.plan import make_plan
from bpo_data.recipe import Recipe, SourceSpec
from bpo_data.sampling import bottom_k, negative_types
from bpo_data.schema import Unit

KEYS = [f"src/{i}/0" for i in range(5000)]


def test_quota_is_exact_and_seeded():
    a = bottom_k(KEYS, 1234, seed=0)
    assert len(a) == 1234
    assert a == bottom_k(reversed(KEYS), 1234, seed=0)
    assert a != bottom_k(KEYS, 1234, seed=1)
    assert bottom_k(KEYS, None, seed=0) == set(KEYS)
    assert bottom_k(KEYS, 10**6, seed=0) == set(KEYS)


def test_the_plans_of_any_shard_count_add_up_to_the_one_shard_plan():
    recipe = Recipe(
        name="t", sources=[SourceSpec(name="src", quota=700, negatives={"weaken": 0.4, "inject": 0.6})]
    )
    units = [
        Unit(
            key=k, source="src", record_id=k, turn=0, image="x.jpg", image_root=".", question="q", answer="a"
        )
        for k in KEYS
    ]

    def plan(index: int, shards: int) -> dict:
        return make_plan(recipe, recipe.sources, lambda spec: iter(units), index, shards).chosen

    whole = plan(0, 1)
    assert len(whole) == 700
    for shards in (2, 3, 8):
        parts = [plan(i, shards) for i in range(shards)]
        assert sum(len(part) for part in parts) == 700
        assert {k: v for part in parts for k, v in part.items()} == whole


def test_hash_is_stable_across_processes():
    code = "from bpo_data.hashing import stable_uniform; print(stable_uniform('src/7/0', 5, 'sample'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(other) == stable_uniform("src/7/0", 5, "sample")


def test_negative_type_ratio_and_both():
    spec = SourceSpec(name="s", negatives={"weaken": 0.3, "inject": 0.7})
    counts = Counter(negative_types(k, spec, 0)[0] for k in KEYS)
    assert abs(counts["weaken"] / len(KEYS) - 0.3) < 0.03
    assert negative_types("s/1/0", SourceSpec(name="s", negatives="both"), 0) == ["weaken", "inject"]
    only = SourceSpec(name="s", negatives={"inject": 1.0})
    assert {negative_types(k, only, 0)[0] for k in KEYS[:200]} == {"inject"}
