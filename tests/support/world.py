"""Helpers shared by the miniature-world tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bpo_data.recipe import Recipe
from bpo_data.world.make import source_specs

# The small world the unit tests make once per session (a few seconds).
SMALL_WORLD = {"scenes": 60, "seed": 3, "eval_scenes": 15, "objhal_scenes": 10}


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


WORLD_SAMPLE = Path(__file__).resolve().parents[2] / "bpo_data" / "world" / "sample"


def world_recipe(filters: list[dict] | None = None, verify: dict | None = None) -> Recipe:
    """Rules-injected pairs of every turn of the shipped world sample (no model runs)."""
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
