"""Fixtures of the trainer's fast tests: a small real export (no model is loaded by these tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.trainer import build_export


@pytest.fixture(scope="session")
def small_export(tmp_path_factory) -> Path:
    """2 units x (weaken, inject) = 4 pairs, exported by `bpo-data export`."""
    return build_export(tmp_path_factory.mktemp("trainer-export"), units=2)
