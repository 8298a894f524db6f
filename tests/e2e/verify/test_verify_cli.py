"""``bpo-data verify``: the sub-app as the lead mounts it, on a real generation folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bpo_data.generate import generate
from bpo_data.jsonl import iter_jsonl
from bpo_data.recipe import Recipe
from bpo_data.verify.cli import verify_app
from bpo_data.world.make import source_specs

SAMPLE = Path(__file__).resolve().parents[3] / "bpo_data" / "world" / "sample"
pytestmark = pytest.mark.slow


def _folder(tmp_path: Path) -> Path:
    sources = [{**spec, "negatives": {"inject": 1.0}} for spec in source_specs(SAMPLE)]
    recipe = {"name": "cli", "model": "smoke", "sources": sources, "inject": {"injector": "rules"}}
    generate(Recipe.model_validate(recipe), tmp_path / "out")
    return tmp_path / "out"


def _summary(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


def test_verify_dir_with_the_world_verifier_then_a_rerun_skips_everything(tmp_path):
    pytest.importorskip("open_clip")
    folder = _folder(tmp_path)
    runner = CliRunner()
    first = _summary(runner.invoke(verify_app, [str(folder), "--clip-model", "world", "--batch-size", "8"]))
    assert first["verified"] > 10 and first["clip_model"].startswith("world-clip@")
    lines = [r for p in folder.glob("verified-*.jsonl") for r in iter_jsonl(p)]
    assert len(lines) == first["verified"]
    scored = [r for r in lines if r["evidence"]["clip_chosen"] is not None]
    assert (
        len(scored) > len(lines) / 2
    )  # the rest deny on both sides ("no cup" / "no bed"): CLIP can't read it
    again = _summary(runner.invoke(verify_app, ["dir", str(folder), "--clip-model", "world"]))
    assert (again["verified"], again["already_verified"]) == (0, first["verified"])


def test_a_missing_checkpoint_or_folder_is_one_error_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(verify_app, [str(tmp_path), "--no-clip"])
    assert result.exit_code == 2 and "holds no pairs" in result.output
    result = runner.invoke(verify_app, [str(tmp_path), "--shard", "3/2"])
    assert result.exit_code == 2 and "--shard" in result.output


def test_train_world_writes_a_folder_open_clip_loads(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    out = tmp_path / "clip"
    result = CliRunner().invoke(
        verify_app, ["train-world", "--out", str(out), "--steps", "2", "--scenes", "40"]
    )
    assert result.exit_code == 0, result.output
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokens = open_clip.get_tokenizer(f"local-dir:{out}")(["a brown dog on the left."])
    assert (
        model.encode_text(tokens).shape[-1]
        == json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"]
    )
