"""Shared fixtures: the tiny LLaVA is built once per test session, from configs, with no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every model here is tiny: its torch threads only wait on each other (and on the other test process
# or job sharing the two cores); one thread each made the world model's tests 5x faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smoke_model_dir(tmp_path_factory) -> Path:
    from bpo_data.smoke_model import build_smoke_model

    return build_smoke_model(tmp_path_factory.mktemp("smoke-llava"))
