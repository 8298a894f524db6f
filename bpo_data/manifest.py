"""The run manifest: what made a generation folder (recipe, data, model, software), for the card and resume.

A rerun into the same folder must make the same pairs, so the recipe's *what* (``Recipe.what``)
must match the first run's; its *how* (``run:``: engines, batch sizes, device) may change, and
the manifest keeps the settings of the latest run for the record.

The data must match too: keys of records without ids are positions, so another file given to the
same source would look "already done". Each source's data file is recorded by path, size and a
fingerprint of its content (not its path: another machine mounts it elsewhere), with its
resolved image root, and a rerun whose file differs is refused.
"""

from __future__ import annotations

import hashlib
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
_BLOCK = 1 << 16
_SAMPLES = 32  # blocks read across the file, beside its first and last MiB


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


def data_fingerprint(path: Path) -> str:
    """A fingerprint of a data file's content: its size, first and last MiB and 32 blocks across it.

    Reading 3 MiB instead of the whole file keeps a rerun quick on the 230 MB LLaVA-Instruct file;
    another file, or one rewritten, differs almost surely (a same-size edit inside one record may not).
    """
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as handle:
        if size <= 2 * (1 << 20) + _SAMPLES * _BLOCK:
            digest.update(handle.read())
        else:
            digest.update(handle.read(1 << 20))
            for i in range(1, _SAMPLES + 1):
                handle.seek(size * i // (_SAMPLES + 1))
                digest.update(handle.read(_BLOCK))
            handle.seek(size - (1 << 20))
            digest.update(handle.read())
    return digest.hexdigest()


def source_record(data: Path, image_root: Path) -> dict[str, Any]:
    """What the manifest keeps of one source's files."""
    return {
        "data": str(data),
        "size": data.stat().st_size,
        "fingerprint": data_fingerprint(data),
        "image_root": str(image_root),
    }


def check_manifest(out_dir: Path, recipe: Recipe, sources: dict[str, dict[str, Any]] | None = None) -> None:
    """Refuse a recipe whose *what* differs from the one that made ``out_dir``, naming the fields, and
    a source whose data file differs from the one it was made from."""
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
    for name, now in (sources or {}).items():
        before = existing.get("sources", {}).get(name)
        if before is not None and before.get("fingerprint") != now["fingerprint"]:
            raise ManifestMismatch(
                f"{out_dir} holds source {name!r} made from {before['data']} ({before['size']:,} bytes); "
                f"this run reads {now['data']} ({now['size']:,} bytes), whose content differs, so its "
                "records would be taken for done ones. Generate it into a new --out, or give it another "
                "source name (--source PATH uses the recipe's one source)"
            )


def write_manifest(
    out_dir: Path,
    recipe: Recipe,
    recipe_path: str,
    generators: list[str],
    sources: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Create the manifest, or record this run's settings, sources and generators in the existing one."""
    check_manifest(out_dir, recipe, sources)
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
        "sources": {**manifest.get("sources", {}), **(sources or {})},
        "generators": sorted(set(manifest.get("generators", [])) | set(generators)),
    }
    if updated == manifest and path.exists():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")  # shards may start together
    tmp.write_text(json.dumps(updated, indent=2), encoding="utf-8")
    tmp.replace(path)
