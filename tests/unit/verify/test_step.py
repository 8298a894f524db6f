"""The ``Verify`` step in a real shard run: evidence on every pair, filters turning pairs into rejects."""

from __future__ import annotations

from support.world import world_recipe

from bpo_data.generate import generate
from bpo_data.jsonl import iter_jsonl
from bpo_data.recipe import FilterSpec
from bpo_data.verify.evidence import FIELDS
from bpo_data.verify.filters import EvidenceFilter
from bpo_data.verify.step import Verify


def _records(folder, kind):
    return [r for path in folder.glob(f"{kind}-*.jsonl") for r in iter_jsonl(path)]


def test_every_pair_is_written_with_its_evidence_and_a_filter_rejects_with_its_reason(tmp_path):
    steps = [Verify(None, batch_size=16), EvidenceFilter(FilterSpec(min_objects_added=1))]
    summary = generate(world_recipe(), tmp_path, steps=steps)
    pairs, rejects = _records(tmp_path, "pairs"), _records(tmp_path, "rejects")
    assert pairs and all(set(p["evidence"]) == set(FIELDS) and p["evidence"]["objects_added"] for p in pairs)
    dropped = [r for r in rejects if r["reason"] == "filter:min_objects_added"]
    assert dropped and summary.rejects["filter:min_objects_added"] == len(dropped)
    assert summary.steps["verify"]["verified"] == len(pairs) + len(dropped)


def test_a_rerun_after_the_filters_makes_nothing_new(tmp_path):
    steps = [Verify(None), EvidenceFilter(FilterSpec(min_objects_added=1))]
    first = generate(world_recipe(), tmp_path, steps=steps)
    second = generate(world_recipe(), tmp_path, steps=steps)
    assert second.pairs_written == 0 and second.already_done == first.pairs_planned


def test_the_recipe_verify_step_and_filters_run_in_the_shard_pipeline_without_clip(tmp_path):
    recipe = world_recipe([{"min_objects_added": 1}, {"max_text_overlap": 0.999}], {"clip_model": None})
    summary = generate(recipe, tmp_path)
    pairs = _records(tmp_path, "pairs")
    assert pairs and all(
        p["evidence"]["objects_added"] and p["evidence"]["clip_model"] is None for p in pairs
    )
    assert list(summary.steps)[-4:] == [
        "verify",
        "filter min_objects_added=1",
        "filter max_text_overlap=0.999",
        "write",
    ]
    assert (
        summary.rejects["filter:min_objects_added"]
        == summary.steps["filter min_objects_added=1"]["dropped: min_objects_added"]
    )
