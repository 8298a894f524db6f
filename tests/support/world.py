"""Helpers shared by the miniature-world tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

# The small world the unit tests make once per session (a few seconds).
SMALL_WORLD = {"scenes": 60, "seed": 3, "eval_scenes": 15, "objhal_scenes": 10}


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
