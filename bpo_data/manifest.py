"""The run manifest: what made a generation folder (recipe, model, software), for the card and for resume.

A rerun into the same folder must make the same pairs, so the recipe's *what* (``Recipe.what``)
must match the first run's; its *how* (``run:``: engines, batch sizes, device) may change, and
the manifest keeps the settings of the latest run for the record.
"""

from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bpo_data import __version__
from bpo_data.recipe import Recipe, differences
from bpo_data.versions import installed

MANIFEST = "manifest.json"


class ManifestMismatch(ValueError):
    """A rerun into a folder made with a different recipe; the message names the fields."""


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ManifestMismatch(
            f"{path} is not valid JSON ({err}); restore it, or generate into a new --out"
        ) from err


def recipe_of(manifest: dict[str, Any]) -> Recipe:
    """The recipe a manifest recorded (recipes written before ``run:`` existed are read too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return Recipe.model_validate(manifest["recipe"])


def check_manifest(out_dir: Path, recipe: Recipe) -> None:
    """Refuse a recipe whose *what* differs from the one that made ``out_dir``, naming the fields."""
    existing = read_manifest(out_dir)
    if existing is None:
        return
    changed = differences(recipe_of(existing).what(), recipe.what())
    if changed:
        raise ManifestMismatch(
            f"{out_dir} was generated with a recipe that makes different pairs "
            f"({existing.get('recipe_path') or 'see its manifest.json'}): {', '.join(changed)} differ. "
            "Rerun with that recipe to resume (engines, batch sizes, concurrency and device may change), "
            "or choose a new --out"
        )


def write_manifest(out_dir: Path, recipe: Recipe, recipe_path: str, generators: list[str]) -> None:
    """Create the manifest, or record this run's settings and generators in the existing one."""
    check_manifest(out_dir, recipe)
    path = out_dir / MANIFEST
    manifest = read_manifest(out_dir) or {
        "recipe": recipe.model_dump(mode="json"),
        "recipe_path": recipe_path,
        "bpo_data_version": __version__,
        "software": installed(),
        "model": recipe.model,
        "generators": [],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    updated = {
        **manifest,
        "run": recipe.run.model_dump(mode="json"),
        "generators": sorted(set(manifest.get("generators", [])) | set(generators)),
    }
    if updated == manifest and path.exists():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")  # shards may start together
    tmp.write_text(json.dumps(updated, indent=2), encoding="utf-8")
    tmp.replace(path)
