"""The dataset card: YAML metadata the Hub reads, and the facts a user needs before training on the data.

The card is rendered from ``dataset_card/template.md`` (shipped in the package) with
``huggingface_hub.DatasetCard.from_template`` (Jinja2), so wording lives in the template and only the
numbers are computed here.
"""

from __future__ import annotations

import json
from pathlib import Path
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


def _runs(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per distinct generation setup (several output dirs of one run show once)."""
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for manifest in manifests:
        recipe = recipe_of(manifest).what() if manifest.get("recipe") else {}
        run = {
            "name": recipe.get("name", "unnamed"),
            "recipe_version": recipe.get("version", ""),
            "recipe_path": manifest.get("recipe_path", ""),
            "model": manifest.get("model") or recipe.get("model", "unknown"),
            "generators": list(manifest.get("generators") or []),
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


def dataset_info(stats: ExportStats, data_dir: Path) -> dict[str, Any]:
    """The card's ``dataset_info``: features, split size and bytes.

    Besides documenting the schema, it changes with every export's content, and ``datasets`` keys
    its cache of a local folder with YAML ``configs`` on it: without it, re-exporting into the same
    folder would let ``load_dataset`` return the previous export's rows.
    """
    from datasets import DatasetInfo

    files = sorted(data_dir.glob("*.parquet"))
    num_bytes = sum(
        meta.row_group(i).total_byte_size
        for meta in (pq.read_metadata(f) for f in files)
        for i in range(meta.num_row_groups)
    )
    info = DatasetInfo(features=features())._to_yaml_dict()
    info["splits"] = [{"name": "train", "num_bytes": num_bytes, "num_examples": stats.pairs}]
    info["download_size"] = sum(f.stat().st_size for f in files)
    info["dataset_size"] = num_bytes
    return info


def render_card(
    stats: ExportStats,
    manifests: list[dict[str, Any]],
    repo_id: str | None = None,
    data_dir: Path | None = None,
) -> DatasetCard:
    """Fill the template with the export's numbers and the manifests' provenance."""
    source_licenses = _source_licenses(manifests)
    license_id, license_note = choose_license([row["format"] for row in source_licenses])
    extra: dict[str, Any] = {}
    if license_id == "other":
        extra["license_name"] = "per-source"
    card_data = DatasetCardData(
        language=["en"],
        license=license_id,
        task_categories=TASK_CATEGORIES,
        tags=TAGS,
        size_categories=[size_category(stats.pairs)],
        pretty_name=PRETTY_NAME,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
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
        generators=stats.generators,
        software=installed(("bpo-data", "datasets", "pyarrow", "huggingface-hub")),
        duplicates_dropped=stats.duplicates_dropped,
        torn_lines=stats.torn_lines,
        image_errors=stats.image_errors,
        generation_rejects=stats.generation_rejects,
        verified=stats.pairs - sum(stats.evidence.get("unverified", {}).values()) if stats.evidence else 0,
        clip_models=stats.evidence.get("clip_models", {}),
        evidence_figure=stats.evidence_figure,
        filtered=stats.filtered,
        license_note=license_note,
        source_licenses=source_licenses,
    )


def write_card(
    path: str | Path, stats: ExportStats, manifests: list[dict[str, Any]], repo_id: str | None = None
) -> None:
    """Write README.md beside the finished ``data/`` folder (its parquet sizes go into the card)."""
    render_card(stats, manifests, repo_id=repo_id, data_dir=Path(path).parent / "data").save(path)
