"""Pairs made from the embedded world sample with the rules injector (no model), once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bpo_data.generate import generate
from bpo_data.recipe import Recipe
from bpo_data.world.make import source_specs

WORLD_SAMPLE = Path(__file__).resolve().parents[3] / "bpo_data" / "world" / "sample"


def world_recipe(filters: list[dict] | None = None, verify: dict | None = None) -> Recipe:
    sources = [{**spec, "negatives": {"inject": 1.0}, "turns": "all"} for spec in source_specs(WORLD_SAMPLE)]
    return Recipe.model_validate(
        {
            "name": "verify-test",
            "model": "smoke",
            "sources": sources,
            "inject": {"injector": "rules"},
            "filters": filters or [],
            "verify": verify,
        }
    )


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
