"""``bpo-data verify DIR``: every pair gets evidence once, whatever is interrupted and rerun."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bpo_data.jsonl import iter_jsonl
from bpo_data.verify.folder import VerifyError, read_evidence, verified_file, verify_folder
from bpo_data.verify.objects import objects


def _pair_keys(folder: Path) -> set[str]:
    return {r["key"] for path in folder.glob("pairs-*.jsonl") for r in iter_jsonl(path)}


def _verified_lines(folder: Path) -> Counter:
    return Counter(r["key"] for path in folder.glob("verified-*.jsonl") for r in iter_jsonl(path))


class _Killed(Exception):
    pass


def test_an_interrupted_run_resumes_and_nothing_is_lost_or_repeated(world_pairs):
    keys = _pair_keys(world_pairs)
    assert len(keys) > 40

    batches = []

    def die_after_two_batches(done: int) -> None:
        batches.append(done)
        if len(batches) == 2:
            raise _Killed

    with pytest.raises(_Killed):
        verify_folder(world_pairs, None, batch_size=8, progress=die_after_two_batches)
    target = verified_file(world_pairs, 0, 1)
    with open(target, "ab") as handle:  # a write torn by the kill
        handle.write(b'{"key": "torn')
    assert sum(_verified_lines(world_pairs).values()) == 16
    summary = verify_folder(world_pairs, None, batch_size=8)
    assert summary.already_verified == 16 and summary.verified == len(keys) - 16
    lines = _verified_lines(world_pairs)
    assert set(lines) == keys and set(lines.values()) == {1}
    again = verify_folder(world_pairs, None, batch_size=8)
    assert (again.verified, again.already_verified) == (0, len(keys))


def test_shards_of_any_count_split_the_pairs_and_a_later_count_skips_them(world_pairs):
    keys = _pair_keys(world_pairs)
    first = verify_folder(world_pairs, None, shard=(0, 3))
    second = verify_folder(world_pairs, None, shard=(2, 3))
    rest = verify_folder(world_pairs, None, shard=(0, 1))
    assert first.verified + second.verified + rest.verified == len(keys)
    assert rest.already_verified == first.verified + second.verified
    assert set(read_evidence(world_pairs)) == keys


def test_evidence_lines_hold_the_object_diff_and_the_overlap(world_pairs):
    verify_folder(world_pairs, None)
    evidence = read_evidence(world_pairs)
    pairs = {r["key"]: r for path in world_pairs.glob("pairs-*.jsonl") for r in iter_jsonl(path)}
    swapped = [k for k, e in evidence.items() if e.objects_added]
    assert swapped, "the rules injector swaps objects in some world answers"
    for key in swapped:
        assert set(evidence[key].objects_added) == objects(pairs[key]["rejected"]) - objects(
            pairs[key]["chosen"]
        )
    assert all(0.0 <= e.text_overlap < 1.0 and e.clip_chosen is None for e in evidence.values())


def test_a_folder_verified_with_one_model_refuses_another(world_pairs):
    key = next(iter(_pair_keys(world_pairs)))
    line = {
        "key": key,
        "evidence": {
            "objects_added": [],
            "objects_removed": [],
            "clip_chosen": 0.1,
            "clip_rejected": 0.0,
            "clip_model": "open_clip:other",
            "text_overlap": 0.5,
        },
    }
    verified_file(world_pairs, 0, 1).write_text(json.dumps(line) + "\n")

    class Scorer:
        model_id = "world-clip@abc"

    with pytest.raises(VerifyError, match="open_clip:other"):
        verify_folder(world_pairs, Scorer())


def test_a_folder_without_pairs_is_refused(tmp_path):
    with pytest.raises(VerifyError, match="pairs-"):
        verify_folder(tmp_path, None)


def test_evidence_from_before_claims_added_is_measured_again_and_the_new_line_wins(world_pairs, tmp_path):
    from bpo_data.export import ExportError, export_dataset
    from bpo_data.recipe import FilterSpec

    keys = sorted(_pair_keys(world_pairs))
    older = {"objects_added": [], "objects_removed": [], "text_overlap": 0.5}  # no claims_added
    verified_file(world_pairs, 0, 1).write_text(
        "".join(json.dumps({"key": key, "evidence": older}) + "\n" for key in keys)
    )
    claims = FilterSpec(min_claims_added=1)
    with pytest.raises(ExportError, match=f"filter:min_claims_added': {len(keys)}"):
        export_dataset([world_pairs], tmp_path / "before", version="0.1.0", filters=[claims])

    summary = verify_folder(world_pairs, None)
    assert summary.verified == len(keys) and _verified_lines(world_pairs) == Counter(dict.fromkeys(keys, 2))
    evidence = read_evidence(world_pairs)
    assert all(e.claims_added is not None for e in evidence.values())
    assert verify_folder(world_pairs, None).verified == 0  # complete now: nothing left to measure
    stats = export_dataset([world_pairs], tmp_path / "after", version="0.1.0", filters=[claims])
    kept = sum(bool(e.claims_added) for e in evidence.values())
    assert 0 < kept == stats.pairs < len(keys)
