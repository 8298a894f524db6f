"""A small LLaVA-format source on disk (JSONL + drawn images) for the end-to-end tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from PIL import Image

OBJECTS = ["dog", "cat", "car", "bus", "cup", "chair"]


def write_llava_source(root: Path, n: int, *, extra: list[dict] | None = None) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (40, 40), (i * 9 % 256, 80, 160)).save(images / f"{i}.jpg")
        n_obj = i % 4 + 1
        obj = OBJECTS[i % len(OBJECTS)]
        records.append(
            {
                "id": f"r{i}",
                "image": f"{i}.jpg",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is in the picture?"},
                    {"from": "gpt", "value": f"There are {n_obj} red {obj}s to the left of a blue car."},
                    {"from": "human", "value": "What colour is the car?"},
                    {
                        "from": "gpt",
                        "value": "The car on the right is blue and it is parked near two chairs.",
                    },
                ],
            }
        )
    records.extend(extra or [])
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data, images


def write_recipe(
    path: Path,
    data: Path,
    images: Path,
    *,
    negatives="both",
    batch_size: int = 4,
    max_new_tokens: int = 12,
    quota=None,
    filters: list[dict] | None = None,
) -> Path:
    """A recipe over that source with the smoke model and the rules injector (fast on a CPU)."""
    recipe = {
        "name": "t",
        "seed": 1,
        "model": "smoke",
        "sources": [
            {
                "name": "src",
                "format": "llava",
                "data": str(data),
                "image_root": str(images),
                "quota": quota,
                "turns": "all",
                "style": "qa",
                "negatives": negatives,
            }
        ],
        "weaken": {"sampling": {"temperature": 0.2, "max_new_tokens": max_new_tokens}},
        "inject": {"injector": "rules"},
        "filters": filters or [],
        "run": {"device": "cpu", "weaken": {"batch_size": batch_size}},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path
