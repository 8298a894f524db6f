"""Fixtures of the trainer's fast tests: a small real export, a model folder (no model is loaded by these
tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.trainer import build_export


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """A folder that passes the model-source check (it has a config.json) and that no test loads."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture(scope="session")
def small_export(tmp_path_factory) -> Path:
    """2 units x (weaken, inject) = 4 pairs, exported by `bpo-data export`."""
    return build_export(tmp_path_factory.mktemp("trainer-export"), units=2)
