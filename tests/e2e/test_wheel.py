"""A wheel install works on its own: shipped recipes, prompts and the card template come with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_demo_and_an_export_run_from_an_installed_wheel(tmp_path, smoke_model_dir):
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        str(REPO),
        "-w",
        str(wheels),
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("bpo_data-*.whl")
    # A fresh venv that borrows the heavy dependencies (torch, transformers…) but not bpo_data itself.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", str(venv), cwd=tmp_path)
    python = str(venv / "bin" / "python")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel), cwd=tmp_path)

    elsewhere = tmp_path / "work"  # not the repository: nothing may be found through the checkout
    elsewhere.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "smoke-llava-v1").symlink_to(smoke_model_dir)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"BPO_DATA_CACHE": str(cache)}
    where = _run(python, "-c", "import bpo_data; print(bpo_data.__file__)", cwd=elsewhere, env=env).stdout
    assert str(venv) in where and str(REPO) not in where

    _run(
        python,
        "-m",
        "bpo_data",
        "generate",
        "--source",
        "sample",
        "--out",
        "o",
        "--no-progress",
        cwd=elsewhere,
        env=env,
    )
    _run(python, "-m", "bpo_data", "export", "o", "--to", "d", cwd=elsewhere, env=env)
    card = (elsewhere / "d" / "README.md").read_text()
    assert "preference pairs" in card
    count = _run(
        python,
        "-c",
        "from datasets import load_dataset; print(len(load_dataset('d')['train']))",
        cwd=elsewhere,
        env=env,
    ).stdout
    assert int(count) > 0
    # the shipped prompts are found too (the llm injector's recipes name them)
    prompts = _run(
        python,
        "-c",
        "from bpo_data.resources import prompt_names; print(prompt_names())",
        cwd=elsewhere,
        env=env,
    )
    assert "qa" in prompts.stdout and "description" in prompts.stdout
