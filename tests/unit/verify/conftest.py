"""Pairs made from the embedded world sample with the rules injector (no model), once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.world import world_recipe

from bpo_data.generate import generate


@pytest.fixture(scope="session")
def _made_pairs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world-pairs")
    generate(world_recipe(), out)
    return out


@pytest.fixture
def world_pairs(_made_pairs, tmp_path) -> Path:
    """A fresh copy of a generation folder of ~90 injected pairs about the world sample's pictures."""
    out = tmp_path / "pairs"
    shutil.copytree(_made_pairs, out)
    return out


@pytest.fixture(scope="session")
def world_scorer():
    pytest.importorskip("open_clip", reason="verification needs open-clip-torch (bpo-data[verify])")
    from bpo_data.verify.clip import WORLD, load_scorer

    return load_scorer(WORLD)
