"""Shared fixtures: the tiny LLaVA is built once per test session, from configs, with no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smoke_model_dir(tmp_path_factory) -> Path:
    from bpo_data.smoke_model import build_smoke_model

    return build_smoke_model(tmp_path_factory.mktemp("smoke-llava"))
