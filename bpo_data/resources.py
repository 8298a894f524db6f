"""Files that ship inside the package: recipes, injection prompts, the dataset card template.

They are data a user edits (the repository's top-level ``recipes/`` and ``dataset_card/``
folders are the same files), and they are read through ``importlib.resources`` so that a wheel
install finds them exactly as an editable checkout does.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path


def _folder(*parts: str) -> Traversable:
    return files("bpo_data").joinpath(*parts)


def _names(folder: Traversable) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml")
    )


def _file(folder: Traversable, name: str) -> Path | None:
    entry = folder.joinpath(f"{name}.yaml")
    if not entry.is_file():
        return None
    with as_file(entry) as path:  # a real file for wheels and checkouts alike (zip imports are not supported)
        return Path(path)


def recipe_names() -> list[str]:
    return _names(_folder("recipes"))


def recipe_file(name: str) -> Path | None:
    """The shipped recipe ``name`` (``demo`` → recipes/demo.yaml), or None."""
    return _file(_folder("recipes"), name)


def prompt_names() -> list[str]:
    return _names(_folder("recipes", "prompts"))


def prompt_file(name: str) -> Path | None:
    """The shipped injection prompt ``name`` (``qa`` → recipes/prompts/qa.yaml), or None."""
    return _file(_folder("recipes", "prompts"), name)


def card_template() -> str:
    return _folder("dataset_card", "template.md").read_text(encoding="utf-8")
