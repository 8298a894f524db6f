"""End to end: the CLI on real files, resume after kill -9, shard-count invariance, bad input, strict mode."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image
from support.llava_source import write_llava_source, write_recipe

from bpo_data.jsonl import iter_jsonl

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "bpo_data", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bpo-data {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def env(tmp_path, smoke_model_dir) -> dict:
    env = dict(os.environ)
    cache = tmp_path / "cache"
    (cache).mkdir()
    # Reuse the session's smoke model as the cached one, so subprocesses do not rebuild it.
    os.symlink(smoke_model_dir, cache / "smoke-llava-v1")
    env["BPO_DATA_CACHE"] = str(cache)
    return env


def _keys(out: Path, kind: str = "pairs") -> list[str]:
    return [rec["key"] for p in sorted(out.glob(f"{kind}-*.jsonl")) for rec in iter_jsonl(p)]


def test_demo_command_writes_a_loadable_dataset(tmp_path, env):
    from datasets import load_dataset

    out, ds_dir = tmp_path / "demo", tmp_path / "demo-dataset"
    result = _cli(
        "generate", "--source", "sample", "--out", str(out), "--export", str(ds_dir), "--no-progress", env=env
    )
    assert "smoke model" not in result.stderr  # the demo runs the shipped world model, not random weights
    assert json.loads((out / "manifest.json").read_text())["model"] == "world"
    assert f'load_dataset("{ds_dir}")' in result.stdout
    ds = load_dataset(str(ds_dir))["train"]
    pairs = _keys(out)
    assert len(ds) == len(pairs) > 0
    assert set(ds["negative_type"]) == {"weaken", "inject"}
    assert set(ds["source"]) == {"sharegptv", "llavar", "llava-instruct"}
    row = ds[0]
    assert row["images"][0].mode == "RGB" and row["chosen"][0]["role"] == "assistant"
    assert all("<image>" not in m["content"] for r in ds["prompt"] for m in r)
    rejected = {r["key"] for r in iter_jsonl(next(out.glob("rejects-*.jsonl")))}
    assert not rejected & set(pairs)
    weakened = [r for r in iter_jsonl(next(out.glob("pairs-*.jsonl"))) if r["negative_type"] == "weaken"]
    # the world model writes world language under noise, not byte soup: words and punctuation only
    assert weakened and all(re.fullmatch(r"[A-Za-z0-9 ,.'\"?!;:-]+", r["rejected"]) for r in weakened)


@pytest.mark.parametrize("kill_after_lines", [1, 12])
def test_kill_9_then_rerun_completes_without_loss_or_duplicates(tmp_path, env, kill_after_lines):
    data, images = write_llava_source(tmp_path / "src", 24)
    recipe = write_recipe(tmp_path / "r.yaml", data, images, batch_size=2)
    out = tmp_path / "out"
    args = ["generate", "--recipe", str(recipe), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpo_data", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pairs_file = out / "pairs-00000-of-00001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if pairs_file.exists() and pairs_file.read_bytes().count(b"\n") >= kill_after_lines:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make the source larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(pairs_file, "ab") as handle:  # a write torn by the kill
        handle.write(b'{"key": "src/r0/0#weaken", "chosen": "tor')
    before = pairs_file.read_bytes()
    complete_before = before[: before.rfind(b"\n") + 1]
    keys_before = _keys(out)

    _cli(*args, env=env)
    after = pairs_file.read_bytes()
    assert after.startswith(complete_before), "lines written before the kill must be kept as they were"
    keys = _keys(out)
    assert len(keys) == len(set(keys)), "a pair was written twice"
    summary = json.loads((out / "summary-00000-of-00001.json").read_text())
    assert summary["already_done"] == len(keys_before)  # nothing written before the kill was generated again
    assert (
        summary["pairs_written"] + sum(summary["rejects"].values()) + len(keys_before)
        == summary["pairs_planned"]
    )
    assert summary["models_loaded"] and 0 < summary["load_s"] < summary["elapsed_s"]
    # the rate is of making pairs: loading the model is left out, as the progress bar leaves it out
    rate = summary["pairs_written"] / (summary["elapsed_s"] - summary["load_s"])
    assert summary["pairs_per_s"] == pytest.approx(rate, rel=1e-2, abs=1e-3)

    _cli(*args, env=env)  # a third run finds nothing left: it must not load the model at all
    finished = json.loads((out / "summary-00000-of-00001.json").read_text())
    assert finished["pairs_written"] == 0 and finished["already_done"] == finished["pairs_planned"]
    assert not finished["models_loaded"] and finished["load_s"] == 0
    # the run before finished and nothing changed since: its plan is trusted, no step reads a source
    assert finished["steps"] == {} and finished["units_seen"] == summary["units_seen"]
    assert pairs_file.read_bytes() == after

    clean = tmp_path / "clean"
    _cli("generate", "--recipe", str(recipe), "--out", str(clean), "--no-progress", env=env)
    assert set(keys) | set(_keys(out, "rejects")) == set(_keys(clean)) | set(_keys(clean, "rejects"))
    assert set(keys) == set(_keys(clean))


def test_same_pairs_whatever_the_shard_count_and_resharding_is_safe(tmp_path, env):
    data, images = write_llava_source(tmp_path / "src", 40)
    recipe = write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0}, quota=50)
    one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
    _cli("generate", "--recipe", str(recipe), "--out", str(one), "--no-progress", env=env)
    for i in range(2):
        _cli(
            "generate",
            "--recipe",
            str(recipe),
            "--out",
            str(two),
            "--shard",
            f"{i}/2",
            "--no-progress",
            env=env,
        )
    assert sorted(_keys(one)) == sorted(_keys(two))
    assert len(_keys(one)) == 50

    _cli("generate", "--recipe", str(recipe), "--out", str(mixed), "--shard", "1/3", "--no-progress", env=env)
    first = set(_keys(mixed))
    _cli("generate", "--recipe", str(recipe), "--out", str(mixed), "--no-progress", env=env)
    summary = json.loads((mixed / "summary-00000-of-00001.json").read_text())
    assert summary["already_done"] == len(first) > 0 and summary["pairs_written"] == 50 - len(first)
    keys = _keys(mixed)
    assert len(keys) == len(set(keys)) and set(keys) == set(_keys(one))


def test_bad_input_is_rejected_with_reasons_and_the_run_goes_on(tmp_path, env):
    root = tmp_path / "src"
    extra = [
        {
            "id": "missing",
            "image": "nope.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat?"},
                {"from": "gpt", "value": "A dog next to a red car."},
            ],
        },
        {
            "id": "escape",
            "image": "../../etc/passwd",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat?"},
                {"from": "gpt", "value": "A dog next to a red car."},
            ],
        },
        {
            "id": "cmyk",
            "image": "cmyk.jpg",
            "conversations": [
                {"from": "human", "value": "What?\n<image>"},
                {"from": "gpt", "value": "Two cats sit on a blue couch."},
            ],
        },
        {
            "id": "r0",
            "image": "0.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat?"},
                {"from": "gpt", "value": "A duplicate id."},
            ],
        },
        {"id": "noanswer", "image": "0.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]},
    ]
    data, images = write_llava_source(root, 6, extra=extra)
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(images / "cmyk.jpg")
    with open(data, "a") as handle:
        handle.write('{"id": "broken", "image": \n')
    recipe = write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0})
    out = tmp_path / "out"
    result = _cli("generate", "--recipe", str(recipe), "--out", str(out), "--no-progress", env=env)
    reasons = {r["key"]: r["reason"] for p in out.glob("rejects-*.jsonl") for r in iter_jsonl(p)}
    assert reasons["src/missing/0#inject"] == "missing_image"
    assert "unsafe_image_path" in reasons.values()
    assert "duplicate_id" in reasons.values()
    assert "corrupt_json" in reasons.values()
    assert "no_gpt_turn" in reasons.values()
    assert "src/cmyk/0#inject" in _keys(out)  # converted, not rejected
    for reason in ("missing_image", "unsafe_image_path", "duplicate_id", "corrupt_json"):
        assert reason in result.stderr
    assert len(_keys(out)) >= 12

    strict = _cli(
        "generate",
        "--recipe",
        str(recipe),
        "--out",
        str(tmp_path / "strict"),
        "--strict",
        "--no-progress",
        env=env,
        check=False,
    )
    assert strict.returncode != 0
    assert "error:" in strict.stderr and ("data.jsonl" in strict.stderr or "src/" in strict.stderr)


def test_malformed_recipe_names_the_field(tmp_path, env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"name": "x", "sources": [{"name": "s", "quota": -3}], "weaken": {"noise": {"space": "latent"}}}
        )
    )
    result = _cli("generate", "--recipe", str(bad), "--out", str(tmp_path / "o"), env=env, check=False)
    assert result.returncode == 2
    assert "sources.0.quota" in result.stderr and "weaken.noise.space" in result.stderr
