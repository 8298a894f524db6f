"""A small world made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.world import SMALL_WORLD

from bpo_data.world.make import make_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    return out, make_world(out, **SMALL_WORLD)
