"""Export publishes the evidence (from pair records or ``verified-*.jsonl``) and applies filters."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bpo_data.cli import app
from bpo_data.export import export_dataset
from bpo_data.jsonl import iter_jsonl
from bpo_data.recipe import FilterSpec
from bpo_data.verify.folder import read_evidence, verify_folder


def _rows(dataset_dir):
    return [
        row
        for path in sorted((dataset_dir / "data").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]


def _pairs(folder):
    return [r for path in sorted(folder.glob("pairs-*.jsonl")) for r in iter_jsonl(path)]


def test_unverified_pairs_export_with_null_evidence_and_the_card_says_so(world_pairs, tmp_path):
    stats = export_dataset([world_pairs], tmp_path / "ds", version="0.1.0")
    rows = _rows(tmp_path / "ds")
    assert len(rows) == stats.pairs == len(_pairs(world_pairs))
    assert all(
        r["objects_added"] is None and r["clip_chosen"] is None and r["text_overlap"] is None for r in rows
    )
    assert "No pair was verified" in (tmp_path / "ds" / "README.md").read_text()


def test_evidence_from_a_verify_run_becomes_columns_and_an_export_filter_drops_by_it(world_pairs, tmp_path):
    verify_folder(world_pairs, None)
    stats = export_dataset(
        [world_pairs], tmp_path / "ds", version="0.1.0", filters=[FilterSpec(min_objects_added=1)]
    )
    rows = _rows(tmp_path / "ds")
    evidence = read_evidence(world_pairs)
    without_objects = [k for k, e in evidence.items() if not e.objects_added]
    assert without_objects, "the world sample's rules rewrites include attribute-only changes"
    assert {r["id"] for r in rows} == {k for k, e in evidence.items() if e.objects_added}
    assert all(r["objects_added"] == evidence[r["id"]].objects_added for r in rows)
    assert all(r["text_overlap"] == pytest.approx(evidence[r["id"]].text_overlap, abs=1e-6) for r in rows)
    assert stats.filtered == {"filter:min_objects_added": len(without_objects)}
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"`filter:min_objects_added` {len(without_objects)}" in card
    assert f"{stats.pairs} of {stats.pairs} pairs carry measured evidence" in card


def test_export_filter_flag_errors_name_the_flag(world_pairs, tmp_path):
    result = CliRunner().invoke(
        app, ["export", str(world_pairs), "--to", str(tmp_path / "ds"), "--filter", "min_clip_margin=high"]
    )
    assert result.exit_code == 2
    assert "--filter 'min_clip_margin=high'" in result.output and "min_clip_margin" in result.output
    assert not (tmp_path / "ds").exists()
