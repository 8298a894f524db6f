"""The CLI's boundary: one ``error:`` line with the next step, exit 2, checked before any work, no traceback.

Network cases point the Hub client at a closed loopback port (``HF_ENDPOINT``), so "offline" is the
real client failing to connect, and run in a subprocess because huggingface_hub reads it at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.llava_source import write_llava_source, write_recipe
from typer.testing import CliRunner

from bpo_data import cli
from bpo_data.cli import app

CLOSED_PORT = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused at once


def _run(*args: str, env: dict | None = None) -> object:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def _subprocess(*args: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bpo_data", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
    )


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


@pytest.fixture
def rules_recipe(tmp_path) -> Path:
    """A recipe of one LLaVA-format source whose pairs are all injected by rules (no model needed)."""
    data, images = write_llava_source(tmp_path / "src", 3)
    return write_recipe(tmp_path / "recipe.yaml", data, images, negatives={"inject": 1.0})


@pytest.mark.parametrize(
    "args", [["-h"], ["generate", "-h"], ["verify", "-h"], ["world", "-h"], ["status", "-h"]]
)
def test_every_command_and_group_takes_dash_h(args):
    result = _run(*args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("args", [["--version"], ["world", "--version"]])
def test_version_prints_the_package_version(args):
    from importlib.metadata import version

    result = _run(*args)
    assert result.exit_code == 0 and result.output.strip() == f"bpo-data {version('bpo-data')}"


def test_python_dash_m_bpo_data_cli_runs_the_command():
    """It used to import the module and exit 0 without running anything."""
    result = subprocess.run(
        [sys.executable, "-m", "bpo_data.cli", "generate", "--source", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--source 'nope' is neither a known source" in _one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("gpu", "--device gpu: not a device; use cpu, cuda, cuda:N, mps or auto"),
        ("cuda", "use --device cpu"),
    ],
)
def test_an_unusable_device_is_one_line_before_anything_is_written(tmp_path, device, expected):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    result = _run("generate", "--source", "sample", "--out", str(out), "--device", device)
    assert result.exit_code == 2
    assert expected in _one_error_line(result.output)
    assert "pairs/s" not in result.output  # no progress bar before the error
    assert not out.exists()


def test_a_flag_value_is_checked_like_a_recipe_field_and_named_by_its_flag(tmp_path):
    result = _run("generate", "--source", "sample", "--out", str(tmp_path / "o"), "--weaken-engine", "hff")
    assert result.exit_code == 2
    assert _one_error_line(result.output) == "error: --weaken-engine: Input should be 'hf' or 'vllm'"


def test_unknown_source_names_get_a_did_you_mean_and_sharegpt4v_is_sharegptv(tmp_path, rules_recipe):
    result = _run("generate", "--source", "llavr", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "(did you mean 'llavar'?)" in _one_error_line(result.output)

    result = _run("generate", "--recipe", str(rules_recipe), "--source", "sr", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "has no such source" in _one_error_line(result.output) and "did you mean 'src'" in result.output

    # The paper's name for ShareGPT4V picks the sharegptv recipe, which then asks for its data file.
    result = _run("generate", "--source", "sharegpt4v", "--model", "smoke", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "source 'sharegptv' (ShareGPT4V) has no data file" in _one_error_line(result.output)


@pytest.mark.slow
def test_a_failed_configuration_claims_nothing_and_the_corrected_run_succeeds(tmp_path, smoke_model_dir):
    """generate --source sharegptv without --data left manifest.json, and the correct rerun was refused."""
    out = tmp_path / "out"
    data, images = write_llava_source(tmp_path / "src", 2)
    env = {"BPO_DATA_CACHE": str(smoke_model_dir.parent)}
    first = _run("generate", "--source", "sharegptv", "--model", "smoke", "--out", str(out), env=env)
    assert first.exit_code == 2 and "--data" in _one_error_line(first.output)
    assert "pairs/s" not in first.output
    assert not out.exists() or not any(out.iterdir())

    args = ["--data", str(data), "--image-root", str(images), "--injector", "rules", "--device", "cpu"]
    second = _run("generate", "--source", "sharegptv", "--model", "smoke", "--out", str(out), *args, env=env)
    assert second.exit_code == 0, second.output
    assert list(out.glob("pairs-*.jsonl"))


def test_missing_optional_packages_print_their_pip_line_literally():
    for module, line in (
        ("vllm", "pip install 'bpo-data[vllm]'"),
        ("open_clip", "pip install 'bpo-data[verify]'"),
    ):
        with pytest.raises(cli.typer.Exit) as stopped, _capture() as text:
            with cli._errors_at_the_boundary():
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        assert stopped.value.exit_code == 2
        assert line in text.getvalue()


def test_the_vllm_engine_without_vllm_says_how_to_install_it(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    result = _run("generate", "--source", "sample", "--out", str(tmp_path / "o"), "--weaken-engine", "vllm")
    assert result.exit_code == 2
    assert "pip install 'bpo-data[vllm]'" in _one_error_line(result.output)


def test_debug_lets_the_traceback_through(tmp_path):
    args = ["generate", "--source", "sample", "--injector", "rules", "--shard", "3/2", "--out", str(tmp_path)]
    quiet = _run(*args)
    assert quiet.exit_code == 2 and "need 0 <= i < N" in _one_error_line(quiet.output)
    loud = _run("--debug", *args)
    assert isinstance(loud.exception, ValueError) and "need 0 <= i < N" in str(loud.exception)


@pytest.mark.slow  # a subprocess, a server or training: seconds
@pytest.mark.timeout(60)
def test_an_unreachable_hub_model_fails_at_once_with_the_download_command(tmp_path):
    env = {"HF_ENDPOINT": CLOSED_PORT, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    out = tmp_path / "out"
    result = _subprocess(
        "generate", "--source", "sample", "--model", "llava-hf/llava-1.5-7b-hf", "--out", str(out), env=env
    )
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert "Hub cannot be reached" in line and "huggingface-cli download llava-hf/llava-1.5-7b-hf" in line
    assert not out.exists()

    offline = _subprocess(
        "generate",
        "--source",
        "sample",
        "--model",
        "llava-hf/llava-1.5-7b-hf",
        "--out",
        str(out),
        env={**env, "HF_HUB_OFFLINE": "1"},
    )
    assert offline.returncode == 2
    assert "HF_HUB_OFFLINE is set" in _one_error_line(offline.stderr)


def test_a_cached_model_is_found_offline_and_loaded_by_its_path(tmp_path, monkeypatch):
    """The cache layout huggingface_hub itself writes: refs/main names the snapshot holding config.json."""
    hub = tmp_path / "hub"
    snapshot = hub / "models--llava-hf--tiny" / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (hub / "models--llava-hf--tiny" / "refs").mkdir()
    (hub / "models--llava-hf--tiny" / "refs" / "main").write_text("ab" * 20)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from bpo_data.models import ModelNotFound, check_model, resolve_model

    check_model("llava-hf/tiny")
    assert Path(resolve_model("llava-hf/tiny")) == snapshot
    with pytest.raises(ModelNotFound, match="huggingface-cli download llava-hf/other"):
        check_model("llava-hf/other")


class _capture:
    """Send the CLI's stderr console into a string for the length of a block."""

    def __enter__(self):
        import io

        from rich.console import Console

        self.text = io.StringIO()
        self.saved = cli.console
        cli.console = Console(file=self.text, width=200)
        return self.text

    def __exit__(self, *exc):
        cli.console = self.saved
        return False


@pytest.mark.timeout(60)
def test_push_with_the_hub_out_of_reach_is_one_line_and_leaves_the_export_as_it_was(tmp_path):
    folder = tmp_path / "export"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    (folder / "export_stats.json").write_text('{"version": "1.0.0"}')
    card = '---\nlicense: cc-by-4.0\n---\nload_dataset("<namespace>/<dataset>", split="train")\n'
    (folder / "README.md").write_text(card)
    env = {"HF_ENDPOINT": CLOSED_PORT, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_not_a_real_token"}
    result = _subprocess("push", str(folder), "--repo-id", "me/bpo", env=env)
    assert result.returncode == 2
    assert "cannot reach the Hugging Face Hub to push me/bpo" in _one_error_line(result.stderr)
    assert (folder / "README.md").read_text() == card


def test_a_model_found_once_costs_one_hub_request_per_process(monkeypatch, tmp_path):
    """The CLI and generate() both check the model before writing: the Hub is asked once, not twice."""
    from bpo_data import models

    asked = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_cached_snapshot", lambda model_id: None)
    monkeypatch.setattr(models, "_probe_hub", asked.append)
    monkeypatch.setattr(models, "_FOUND_ON_HUB", set())
    models.check_model("org/asked-once")
    models.check_model("org/asked-once")
    assert asked == ["org/asked-once"]

    def refuse(model_id):
        asked.append(model_id)
        raise models.ModelNotFound(model_id)

    monkeypatch.setattr(models, "_probe_hub", refuse)
    for _ in range(2):  # a failure is not remembered: a download made meanwhile would be seen
        with pytest.raises(models.ModelNotFound):
            models.check_model("org/not-there")
    assert asked == ["org/asked-once", "org/not-there", "org/not-there"]

    folder = tmp_path / "model"  # a folder is looked at each time: one removed meanwhile fails
    folder.mkdir()
    models.check_model(str(folder))
    folder.rmdir()
    with pytest.raises(models.ModelNotFound, match="no such folder"):
        models.check_model(str(folder))
