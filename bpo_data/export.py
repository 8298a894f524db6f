"""Merge generation outputs into the published dataset: parquet shards with embedded images and a card.

The export streams shard lines one at a time (only the set of seen keys and a few counters stay in
memory), so it scales to the full ~167k-pair dataset. Its parquet files carry explicit
``datasets.Features`` in their schema metadata, which is what makes ``load_dataset`` give back
``Image`` objects that stock TRL ``DPOTrainer`` trains on with no mapping.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, Value

from bpo_data.card import write_card
from bpo_data.images import ImageError, image_bytes_for_dataset
from bpo_data.jsonl import numbered_records
from bpo_data.smoke_model import SMOKE_MODEL_ID

log = logging.getLogger(__name__)

_MESSAGES = [{"role": Value("string"), "content": Value("string")}]

# The published schema (DESIGN.md): TRL's columns first, then provenance.
FEATURES = Features(
    {
        "images": [Image()],
        "prompt": _MESSAGES,
        "chosen": _MESSAGES,
        "rejected": _MESSAGES,
        "id": Value("string"),
        "source": Value("string"),
        "negative_type": Value("string"),
        "generator": Value("string"),
        "noise_step": Value("int32"),
        "noise_space": Value("string"),
        "error_types": [Value("string")],
        "image_path": Value("string"),
        "question": Value("string"),
        "turn": Value("int32"),
    }
)

STATS_FILE = "export_stats.json"
CARD_FILE = "README.md"
DATA_DIR = "data"
# Image datasets are read a row group at a time; ~100 rows keeps a group to tens of MB (as HF datasets does).
ROWS_PER_GROUP = 100
_PAIR_KEYS = ("key", "source", "negative_type", "image_path", "image_root", "prompt", "chosen", "rejected")


class ExportError(ValueError):
    """An export that cannot go on; the message names the file or directory and what to do."""


@dataclass
class LengthCounter:
    """Exact mean/median/p95 of word counts with bounded memory: lengths are few distinct integers."""

    histogram: Counter = field(default_factory=Counter)

    def add(self, words: int) -> None:
        self.histogram[words] += 1

    def summary(self) -> dict[str, float]:
        n = sum(self.histogram.values())
        if n == 0:
            return {"mean": 0.0, "median": 0.0, "p95": 0.0}
        total = sum(length * count for length, count in self.histogram.items())
        return {"mean": round(total / n, 1), "median": self._quantile(0.5, n), "p95": self._quantile(0.95, n)}

    def _quantile(self, q: float, n: int) -> float:
        """Nearest-rank quantile: the smallest length whose cumulative count reaches q·n."""
        rank = max(1, math.ceil(round(q * n, 9)))  # round first: 0.95 * 20 must be rank 19, not 20
        seen = 0
        for length in sorted(self.histogram):
            seen += self.histogram[length]
            if seen >= rank:
                return float(length)
        return float(max(self.histogram))


@dataclass
class ExportStats:
    """What the export wrote and what it left out, with the reason; saved as ``export_stats.json``."""

    version: str
    pairs: int = 0
    duplicates_dropped: int = 0
    torn_lines: int = 0
    image_errors: dict[str, int] = field(default_factory=dict)
    generation_rejects: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    generators: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    smoke: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_dataset(
    out_dirs: list[str | os.PathLike],
    to: str | os.PathLike,
    version: str,
    rows_per_file: int = 10_000,
    max_pixels: int = 64_000_000,
    progress: bool = False,
    repo_id: str | None = None,
) -> ExportStats:
    """Merge the pairs of ``out_dirs`` (first key wins) into ``to``: parquet shards, README.md card, stats.

    ``to`` must be empty, absent, or a previous export, which is replaced only once the new one is
    complete. ``repo_id`` only fills the ``load_dataset`` example in the card.
    """
    if rows_per_file < 1:
        raise ExportError(f"rows_per_file must be at least 1, got {rows_per_file}")
    inputs = [Path(d) for d in out_dirs]
    manifests = [_read_manifest(d) for d in inputs]
    target = Path(to)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        stats = ExportStats(version=version)
        stats.smoke = any(_manifest_is_smoke(m) for m in manifests)
        pair_keys: set[str] = set()
        _write_parquet(inputs, staging / DATA_DIR, stats, pair_keys, rows_per_file, max_pixels, progress)
        stats.generation_rejects = _count_rejects(inputs, pair_keys)
        (staging / STATS_FILE).write_text(json.dumps(stats.to_dict(), indent=2) + "\n", encoding="utf-8")
        write_card(staging / CARD_FILE, stats, manifests, repo_id=repo_id)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stats


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise ExportError(
            f"{out_dir} has no manifest.json: give the output directory of a `bpo-data generate` run"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ExportError(
            f"{path} is not valid JSON ({err}); rerun `bpo-data generate` to rewrite it"
        ) from err


def _manifest_is_smoke(manifest: dict[str, Any]) -> bool:
    return bool(manifest.get("smoke_model")) or manifest.get("model") == SMOKE_MODEL_ID


def _check_target(target: Path) -> None:
    """Refuse to overwrite anything that is not a previous export of ours."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file; give a directory to export into")
    if not target.exists() or not any(target.iterdir()):
        return
    ours = {DATA_DIR, CARD_FILE, STATS_FILE}
    entries = {p.name for p in target.iterdir()}
    if (target / STATS_FILE).is_file() and entries <= ours:
        return
    raise ExportError(
        f"{target} is not empty and is not a bpo-data export (it holds {sorted(entries)[:5]}); "
        "export into a new or empty directory"
    )


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put the finished export at ``target``; a previous export is moved aside first and then removed."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def _shard_files(out_dir: Path, prefix: str) -> list[Path]:
    return sorted(out_dir.glob(f"{prefix}-*.jsonl"))


def _read_lines(path: Path, stats: ExportStats | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record); a line a killed writer left half-written is skipped and counted."""

    def skipped(number: int, complete: bool) -> None:
        if stats is not None:
            stats.torn_lines += 1
        if complete:  # a torn last line is expected after a kill; a bad line in the middle is not
            log.warning("%s:%d is not valid JSON (a torn write?); skipped", path, number)

    return numbered_records(path, skipped)


def _iter_pairs(inputs: list[Path], stats: ExportStats, seen: set[str]) -> Iterator[dict[str, Any]]:
    """Pairs in input order, each key once (the first wins); ``seen`` collects the keys."""
    for out_dir in inputs:
        files = _shard_files(out_dir, "pairs")
        if not files:
            raise ExportError(
                f"{out_dir} holds no pairs-*.jsonl shard files; has `bpo-data generate` run there?"
            )
        for path in files:
            for number, record in _read_lines(path, stats):
                missing = [k for k in _PAIR_KEYS if k not in record]
                if missing:
                    raise ExportError(
                        f"{path}:{number} lacks {missing}: it is not a bpo-data pair; "
                        "remove the line or the file from the output directory"
                    )
                if record["key"] in seen:
                    stats.duplicates_dropped += 1
                    continue
                seen.add(record["key"])
                yield record


def _count_rejects(inputs: list[Path], pair_keys: set[str]) -> dict[str, int]:
    """Generation rejects by reason, each key once, so the card shows what never became a pair.

    A key that also has a pair was retried successfully (``engine_error`` rejects are retried).
    """
    seen = set(pair_keys)
    reasons: Counter = Counter()
    for out_dir in inputs:
        for path in _shard_files(out_dir, "rejects"):
            for _, record in _read_lines(path, None):
                key = record.get("key")
                if key in seen:
                    continue
                seen.add(key)
                reasons[record.get("reason", "unknown")] += 1
    return dict(sorted(reasons.items()))


def _words(text: str) -> int:
    return len(text.split())


def _row(record: dict[str, Any], image: bytes) -> dict[str, Any]:
    prompt = [{"role": m["role"], "content": m["content"]} for m in record["prompt"]]
    question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return {
        "images": [{"bytes": image, "path": None}],
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": record["chosen"]}],
        "rejected": [{"role": "assistant", "content": record["rejected"]}],
        "id": record["key"],
        "source": record["source"],
        "negative_type": record["negative_type"],
        "generator": record.get("generator", ""),
        "noise_step": record.get("noise_step"),
        "noise_space": record.get("noise_space"),
        "error_types": list(record.get("error_types") or []),
        "image_path": record["image_path"],
        "question": question,
        "turn": record.get("turn", 0),
    }


class _ShardWriter:
    """Rolls parquet files every ``rows_per_file`` rows; final names are given once the count is known."""

    def __init__(self, data_dir: Path, rows_per_file: int):
        self.data_dir = data_dir
        self.rows_per_file = rows_per_file
        self.schema = FEATURES.arrow_schema
        self.parts: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0
        self._buffer: list[dict[str, Any]] = []
        data_dir.mkdir(parents=True)

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if (
            len(self._buffer) >= ROWS_PER_GROUP
            or self._rows_in_file + len(self._buffer) >= self.rows_per_file
        ):
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            part = self.data_dir / f"part-{len(self.parts):05d}.parquet"
            self.parts.append(part)
            self._writer = pq.ParquetWriter(part, self.schema)
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._rows_in_file += len(self._buffer)
        self._buffer = []
        if self._rows_in_file >= self.rows_per_file:
            self._writer.close()
            self._writer = None
            self._rows_in_file = 0

    def close(self) -> list[str]:
        """Finish the last file and rename all to ``train-0000i-of-0000N.parquet``; return relative paths."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        names = []
        for index, part in enumerate(self.parts):
            name = f"train-{index:05d}-of-{len(self.parts):05d}.parquet"
            part.rename(self.data_dir / name)
            names.append(f"{DATA_DIR}/{name}")
        return names


def _write_parquet(
    inputs: list[Path],
    data_dir: Path,
    stats: ExportStats,
    pair_keys: set[str],
    rows_per_file: int,
    max_pixels: int,
    progress: bool,
) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    writer = _ShardWriter(data_dir, rows_per_file)
    counts: Counter = Counter()
    generators: Counter = Counter()
    image_errors: Counter = Counter()
    lengths: dict[str, dict[str, LengthCounter]] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("exported {task.completed} pairs"),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("export")
        for record in _iter_pairs(inputs, stats, pair_keys):
            try:
                image = image_bytes_for_dataset(record["image_root"], record["image_path"], max_pixels)
            except ImageError as err:
                image_errors[err.reason] += 1
                log.warning(
                    "skipping %s: image %s: %s (%s)",
                    record["key"],
                    record["image_path"],
                    err.reason,
                    err.detail,
                )
                continue
            row = _row(record, image)
            writer.add(row)
            counts[(row["source"], row["negative_type"])] += 1
            generators[row["generator"]] += 1
            stats.smoke = stats.smoke or bool((record.get("meta") or {}).get("smoke_model"))
            per_type = lengths.setdefault(
                row["negative_type"], {k: LengthCounter() for k in ("prompt", "chosen", "rejected")}
            )
            per_type["prompt"].add(sum(_words(m["content"]) for m in row["prompt"]))
            per_type["chosen"].add(_words(record["chosen"]))
            per_type["rejected"].add(_words(record["rejected"]))
            stats.pairs += 1
            bar.advance(task)
    stats.files = writer.close()
    if stats.pairs == 0:
        raise ExportError(
            f"no exportable pairs in {[str(d) for d in inputs]} "
            f"(duplicates {stats.duplicates_dropped}, image errors {dict(image_errors)}, "
            f"torn lines {stats.torn_lines}); see the warnings above for each skipped pair"
        )
    for (source, negative_type), n in sorted(counts.items()):
        stats.counts.setdefault(source, {})[negative_type] = n
    stats.generators = dict(sorted(generators.items()))
    stats.image_errors = dict(sorted(image_errors.items()))
    stats.lengths = {t: {k: c.summary() for k, c in per.items()} for t, per in sorted(lengths.items())}
