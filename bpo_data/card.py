"""The dataset card: YAML metadata the Hub reads, and the facts a user needs before training on the data.

The card is rendered from ``dataset_card/template.md`` (shipped in the package) with
``huggingface_hub.DatasetCard.from_template`` (Jinja2), so wording lives in the template and only the
numbers are computed here.
The card names no local path: a recipe file shows as its name, a model folder as its folder name.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Any

import pyarrow.parquet as pq
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from bpo_data import resources
from bpo_data.export_stats import ExportStats
from bpo_data.manifest import recipe_of
from bpo_data.schema import features
from bpo_data.versions import installed

PRETTY_NAME = "BPO preference pairs for multimodal LLMs"
REPO_PLACEHOLDER = "<namespace>/<dataset>"
TASK_CATEGORIES = ["visual-question-answering", "image-text-to-text"]
TAGS = ["dpo", "preference", "multimodal", "hallucination", "bpo", "trl"]
NEGATIVE_TYPE_ORDER = ["weaken", "inject"]

# Licences of the sources' annotations, as their publishers state them on the Hub
# (Lin-Chen/ShareGPT4V, SALT-NLP/LLaVAR, liuhaotian/LLaVA-Instruct-150K), keyed by recipe format.
SOURCE_LICENSES = {
    "sharegptv": "cc-by-nc-4.0",
    "llavar": "cc-by-nc-4.0",
    "llava-instruct": "cc-by-4.0",
}
LICENSE_LINKS = {
    "cc-by-nc-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
}
# The Hub datasets each source format is read from (the card's ``source_datasets``).
SOURCE_DATASETS = {
    "sharegptv": "Lin-Chen/ShareGPT4V",
    "llavar": "SALT-NLP/LLaVAR",
    "llava-instruct": "liuhaotian/LLaVA-Instruct-150K",
}
_OPENAI_TERMS = "llava-instruct"  # written by GPT-4: its users must also follow OpenAI's terms of use

# The Hub's size buckets: (exclusive upper bound, label).
_SIZE_BUCKETS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` label for a row count."""
    for bound, label in _SIZE_BUCKETS:
        if rows < bound:
            return label
    return "n>1B"


def choose_license(formats: list[str]) -> tuple[str, str]:
    """The dataset licence (the most restrictive of its sources) and the sentence that explains it.

    A source format whose licence is not known here gives ``other``: the publisher must check it.
    """
    unknown = sorted({f for f in formats if f not in SOURCE_LICENSES})
    terms = (
        " LLaVA-Instruct was written by GPT-4: its users must also follow OpenAI's terms of use."
        if _OPENAI_TERMS in formats
        else ""
    )
    if unknown or not formats:
        which = f"the source format(s) {unknown}" if unknown else "these sources"
        return "other", (
            f"The licence of {which} is not known to bpo-data, so this card says "
            "`license: other`: check each source's terms below and set the licence before sharing." + terms
        )
    if any(SOURCE_LICENSES[f] == "cc-by-nc-4.0" for f in formats):
        return "cc-by-nc-4.0", (
            "The pairs are derived from sources released under CC BY-NC 4.0, so the dataset as a whole is "
            "CC BY-NC 4.0 (non-commercial), the most restrictive licence of its parts." + terms
        )
    return "cc-by-4.0", "All sources are released under CC BY 4.0, and so is this dataset." + terms


def _local_names(value: Any) -> Any:
    """``value`` with every absolute path replaced by its last part: a card names no local folder."""
    if isinstance(value, dict):
        return {k: _local_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_local_names(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or PurePath(value).is_absolute()):
        return PurePath(value).name
    return value


def _generator_name(generator: str) -> str:
    """``hf:/home/me/models/llava`` as ``hf:llava``: an engine and the model's name, not where it lies."""
    engine, sep, model = generator.partition(":")
    return f"{engine}{sep}{_local_names(model)}" if sep else _local_names(generator)


def _runs(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per distinct generation setup (several output dirs of one run show once)."""
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for manifest in manifests:
        recipe = _local_names(recipe_of(manifest).what()) if manifest.get("recipe") else {}
        run = {
            "name": recipe.get("name", "unnamed"),
            "recipe_version": recipe.get("version", ""),
            "recipe_file": PurePath(manifest.get("recipe_path") or "").name,
            "model": _local_names(manifest.get("model") or recipe.get("model", "unknown")),
            "generators": [_generator_name(g) for g in manifest.get("generators") or []],
            "seed": recipe.get("seed", "unknown"),
            "software": dict(manifest.get("software") or {}),
            "recipe_yaml": yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True),
        }
        fingerprint = json.dumps(run, sort_keys=True)
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        run["created_at"] = manifest.get("created_at", "unknown")
        runs.append(run)
    return runs


def _source_licenses(manifests: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    for manifest in manifests:
        for source in (manifest.get("recipe") or {}).get("sources", []):
            fmt = source.get("format", "unknown")
            rows[source.get("name", fmt)] = {
                "name": source.get("name", fmt),
                "format": fmt,
                "license": SOURCE_LICENSES.get(fmt, "unknown: check the source's terms"),
            }
    return list(rows.values())


def _negative_types(stats: ExportStats) -> list[str]:
    present = {t for per_source in stats.counts.values() for t in per_source}
    return [t for t in NEGATIVE_TYPE_ORDER if t in present] + sorted(present - set(NEGATIVE_TYPE_ORDER))


def source_datasets(formats: list[str]) -> list[str]:
    """The card's ``source_datasets``: the Hub datasets the pairs extend (``original`` for the rest)."""
    known = sorted({f"extended|{SOURCE_DATASETS[f]}" for f in formats if f in SOURCE_DATASETS})
    return known + (["original"] if not known or any(f not in SOURCE_DATASETS for f in formats) else [])


def splits_of(stats: ExportStats) -> list[str]:
    """The splits this export wrote: ``train``, and ``test`` when pairs were held out."""
    return ["train", "test"] if stats.test_pairs else ["train"]


def dataset_info(stats: ExportStats, data_dir: Path) -> dict[str, Any]:
    """The card's ``dataset_info``: features, split sizes and bytes.

    Besides documenting the schema, it changes with every export's content, and ``datasets`` keys
    its cache of a local folder with YAML ``configs`` on it: without it, re-exporting into the same
    folder would let ``load_dataset`` return the previous export's rows.
    """
    from datasets import DatasetInfo

    def data_bytes(files: list[Path]) -> int:
        return sum(
            meta.row_group(i).total_byte_size
            for meta in (pq.read_metadata(f) for f in files)
            for i in range(meta.num_row_groups)
        )

    examples = {"train": stats.pairs - stats.test_pairs, "test": stats.test_pairs}
    info = DatasetInfo(features=features())._to_yaml_dict()
    info["splits"] = [
        {
            "name": split,
            "num_bytes": data_bytes(sorted(data_dir.glob(f"{split}-*.parquet"))),
            "num_examples": examples[split],
        }
        for split in splits_of(stats)
    ]
    files = sorted(data_dir.glob("*.parquet"))
    info["download_size"] = sum(f.stat().st_size for f in files)
    info["dataset_size"] = data_bytes(files)
    return info


def render_card(
    stats: ExportStats,
    manifests: list[dict[str, Any]],
    repo_id: str | None = None,
    data_dir: Path | None = None,
) -> DatasetCard:
    """Fill the template with the export's numbers and the manifests' provenance."""
    source_licenses = _source_licenses(manifests)
    formats = [row["format"] for row in source_licenses]
    license_id, license_note = choose_license(formats)
    extra: dict[str, Any] = {}
    if license_id == "other":
        extra["license_name"] = "per-source"
    card_data = DatasetCardData(
        language=["en"],
        license=license_id,
        # ``other``: the card's own License section says what each source allows.
        license_link=LICENSE_LINKS.get(license_id, "README.md#license"),
        task_categories=TASK_CATEGORIES,
        tags=TAGS,
        size_categories=[size_category(stats.pairs)],
        source_datasets=source_datasets(formats),
        pretty_name=PRETTY_NAME,
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in splits_of(stats)],
            }
        ],
        **({"dataset_info": dataset_info(stats, data_dir)} if data_dir is not None else {}),
        **extra,
    )
    types = _negative_types(stats)
    composition = [
        {
            "source": source,
            "counts": [per_type.get(t, 0) for t in types],
            "total": sum(per_type.values()),
        }
        for source, per_type in sorted(stats.counts.items())
    ]
    lengths = [
        {"negative_type": t, "text": text, **stats.lengths[t][text]}
        for t in types
        if t in stats.lengths
        for text in ("prompt", "chosen", "rejected")
    ]
    return DatasetCard.from_template(
        card_data,
        template_str=resources.card_template(),
        pretty_name=PRETTY_NAME,
        version=stats.version,
        repo_id=repo_id or REPO_PLACEHOLDER,
        smoke=stats.smoke,
        pairs=stats.pairs,
        negative_types=types,
        composition=composition,
        column_totals=[sum(row["counts"][i] for row in composition) for i in range(len(types))],
        lengths=lengths,
        runs=_runs(manifests),
        generators={_generator_name(g): n for g, n in stats.generators.items()},
        software=installed(("bpo-data", "datasets", "pyarrow", "huggingface-hub")),
        duplicates_dropped=stats.duplicates_dropped,
        torn_lines=stats.torn_lines,
        image_errors=stats.image_errors,
        generation_rejects=stats.generation_rejects,
        verified=stats.pairs - sum(stats.evidence.get("unverified", {}).values()) if stats.evidence else 0,
        clip_models=stats.evidence.get("clip_models", {}),
        evidence_figure=stats.evidence_figure,
        composition_figure=stats.composition_figure,
        error_types=stats.error_types,
        test_pairs=stats.test_pairs,
        train_pairs=stats.pairs - stats.test_pairs,
        test_size=stats.test_size,
        filtered=stats.filtered,
        license_note=license_note,
        source_licenses=source_licenses,
    )


def write_card(
    path: str | Path, stats: ExportStats, manifests: list[dict[str, Any]], repo_id: str | None = None
) -> None:
    """Write README.md beside the finished ``data/`` folder (its parquet sizes go into the card)."""
    render_card(stats, manifests, repo_id=repo_id, data_dir=Path(path).parent / "data").save(path)
