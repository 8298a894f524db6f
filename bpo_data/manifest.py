"""The run manifest: what made a generation directory (recipe, model, software), for the card and for resume.

A rerun into the same directory must use the same recipe, or keys written by the first recipe
would be silently mixed with another sampling; data paths may differ (another machine).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from bpo_data import __version__
from bpo_data.recipe import Recipe

MANIFEST = "manifest.json"


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "bpo_data": __version__}
    for name in ("torch", "transformers", "datasets", "pyarrow", "openai", "vllm"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        versions[name] = getattr(module, "__version__", "unknown")
    return versions


def _portable(recipe: Recipe) -> dict:
    """The recipe without machine-specific paths: what must match between runs into one directory."""
    data = recipe.model_dump(mode="json")
    for source in data["sources"]:
        source.pop("data", None)
        source.pop("image_root", None)
    data.pop("device", None)
    return data


def write_or_check_manifest(out_dir: Path, recipe: Recipe, recipe_path: str, generators: list[str]) -> None:
    path = out_dir / MANIFEST
    if path.exists():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if _portable(Recipe.model_validate(existing["recipe"])) != _portable(recipe):
            raise ValueError(
                f"{out_dir} was generated with a different recipe ({existing.get('recipe_path')}); "
                "rerun with that recipe to resume, or choose a new --out"
            )
        known = set(existing.get("generators", []))
        if known >= set(generators):
            return
        existing["generators"] = sorted(known | set(generators))
        manifest = existing
    else:
        manifest = {
            "recipe": recipe.model_dump(mode="json"),
            "recipe_path": recipe_path,
            "bpo_data_version": __version__,
            "software": software_versions(),
            "model": recipe.model,
            "generators": sorted(set(generators)),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")  # shards may start together
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(path)
