"""The training pairs: a `bpo-data` export (or its Hub copy), filtered by provenance, cut to a stable subset.

Filters and subsets only pick row indices (``Dataset.select``), so no image is decoded or copied before
training. The subset for ``--max-samples N`` is the N pairs with the smallest stable hash of their ``id``:
the same N pairs on any machine and in any row order, and the subset for N is contained in the subset for
any larger N, which is what a dataset-size sweep needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo_data.hashing import stable_u64
from bpo_data.schema import unit_key_of
from trainer_min.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("images", "prompt", "chosen", "rejected")
SUBSET_PURPOSE = "max_samples"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class DataError(UserError, ValueError):
    """The dataset cannot be trained on as asked; the message names the dataset, column or flag, and a fix."""


def check_dataset_location(dataset: str) -> None:
    """Fail at once, naming the folder, when ``dataset`` is meant as a local folder that does not exist.

    Cheap (no datasets import), so a command says it before loading TRL or the model. A value that exists
    here is local; one that cannot be a Hub id (``./x``, ``/abs/x``, ``a/b/c``) or whose parent folder exists
    here (``out/demo-dataset`` next to an ``out/``) must be a local folder; anything else is a Hub id.
    """
    if not dataset.strip():
        raise DataError(
            "--dataset is empty; give the directory written by `bpo-data export` or a Hub dataset id"
        )
    path = Path(dataset).expanduser()
    if path.exists():
        return
    parent_is_here = path.parent != Path(".") and path.parent.is_dir()
    if HUB_ID.fullmatch(dataset) is None or parent_is_here:
        raise DataError(
            f"--dataset {dataset}: no such folder; give the directory written by `bpo-data export` "
            "(or a Hub dataset id pushed by `bpo-data push`)"
        )


def split_values(values: list[str] | str | None) -> list[str] | None:
    """``["a,b", "c"]`` or ``"a,b,c"`` -> ``["a", "b", "c"]``; empty -> None (no filter)."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    out = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    return out or None


def load_pairs(dataset: str, split: str = "train", revision: str | None = None) -> Dataset:
    """Load an export directory or a Hub dataset id and check it has the columns TRL trains on."""
    from datasets import load_dataset

    local = Path(dataset)
    shards = sorted(str(path) for path in (local / "data").glob(f"{split}-*.parquet"))
    try:
        if shards:
            # An export's parquet files, named explicitly: datasets then keys its cache on their paths and
            # mtimes. `load_dataset(<dir>)` (datasets 5.2) keys it on the card's config only and hands back
            # a stale copy after a re-export into the same directory.
            ds = load_dataset("parquet", data_files={split: shards}, split=split)
        elif local.exists():
            ds = load_dataset(str(local), split=split)
        else:
            ds = load_dataset(dataset, split=split, revision=revision)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        where = "" if local.exists() else "it is no directory here, so it was looked up on the Hub: "
        raise DataError(
            f"cannot load the dataset {dataset!r} (split {split!r}): {where}{err}. Give the directory "
            "written by `bpo-data export` or a Hub dataset id pushed by `bpo-data push`"
        ) from err
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{dataset} lacks the columns {missing} (it has {ds.column_names}); "
            "train on a dataset exported by `bpo-data export`"
        )
    return ds


def select_pairs(
    ds: Dataset,
    sources: list[str] | None = None,
    negative_types: list[str] | None = None,
    max_samples: int | None = None,
) -> Dataset:
    """Keep the rows whose provenance matches, then the ``max_samples`` with the smallest stable id hash."""
    for column, wanted, flag in (
        ("source", sources, "--sources"),
        ("negative_type", negative_types, "--negative-types"),
    ):
        if wanted:
            ds = _keep_values(ds, column, set(wanted), flag)
    if max_samples is not None:
        ids = _column(ds, "id", "--max-samples")
        if max_samples >= len(ids):
            log.warning(
                "--max-samples %d >= the %d pairs selected; training on all of them", max_samples, len(ids)
            )
        else:
            ranked = sorted(range(len(ids)), key=lambda i: (stable_u64(ids[i], 0, SUBSET_PURPOSE), ids[i]))
            ds = ds.select(sorted(ranked[:max_samples]))
    if len(ds) == 0:
        raise DataError("no pairs left to train on; check --sources, --negative-types and the dataset")
    return ds


def as_sft(ds: Dataset) -> Dataset:
    """Prompt-completion rows of the chosen answers, one per unit (its weaken and inject pairs share it)."""
    ids = _column(ds, "id", "sft")
    seen: set[str] = set()
    first = []
    for index, pair_id in enumerate(ids):
        unit = unit_key_of(pair_id)
        if unit not in seen:
            seen.add(unit)
            first.append(index)
    if len(first) < len(ids):
        ds = ds.select(first)
    return ds.remove_columns(["rejected"]).rename_column("chosen", "completion")


def describe(dataset: str, ds: Dataset, split: str, revision: str | None) -> dict[str, Any]:
    """What training_config.json records about the data: where from, which version, exactly which rows."""
    local = Path(dataset)
    info: dict[str, Any] = {
        "dataset": dataset,
        "path": str(local.resolve()) if local.exists() else None,
        "revision": revision,
        "split": split,
        "rows": len(ds),
        "ids_sha256": ids_digest(ds) if "id" in ds.column_names else None,
    }
    stats = local / "export_stats.json"
    if stats.is_file():
        info["version"] = json.loads(stats.read_text(encoding="utf-8")).get("version")
    return info


def ids_digest(ds: Dataset) -> str:
    """A digest of the sorted ids: two runs trained on the same pairs have the same digest."""
    digest = hashlib.sha256()
    for pair_id in sorted(ds["id"]):
        digest.update(pair_id.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _column(ds: Dataset, column: str, flag: str) -> list:
    if column not in ds.column_names:
        raise DataError(
            f"{flag} needs the provenance column {column!r}, which this dataset lacks "
            f"(it has {ds.column_names}); use a dataset exported by `bpo-data export` or drop the flag"
        )
    return list(ds[column])


def _keep_values(ds: Dataset, column: str, wanted: set[str], flag: str) -> Dataset:
    values = _column(ds, column, flag)
    available = Counter(values)
    unknown = sorted(wanted - set(available))
    if unknown:
        raise DataError(
            f"{flag} {unknown} matches no pair; "
            f"the dataset's {column} values are {dict(sorted(available.items()))}"
        )
    return ds.select([i for i, value in enumerate(values) if value in wanted])
