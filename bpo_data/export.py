"""Merge generation outputs into the published dataset: parquet shards with embedded images and a card.

The export streams shard lines one at a time (only the set of seen keys and a few counters stay in
memory), so it scales to the full ~167k-pair dataset. Its parquet files carry explicit
``datasets.Features`` in their schema metadata, which is what makes ``load_dataset`` give back
``Image`` objects that stock TRL ``DPOTrainer`` trains on with no mapping.

Images are embedded as their original bytes after a header check (``images.image_bytes_for_dataset``):
a pixel decode happens only where the bytes must change. They are checked as generation checked
them: inside their image root (or a folder the generation run trusted), within the recipe's size
and aspect-ratio bounds. The export is written to a staging folder beside the target and moved into
place when complete; a staging folder left by a killed export is removed by the next one.

An optional held-out split (``test_size``) is chosen by a hash of each pair's image path, so every
pair of one image lands on the same side and the split is the same whatever the export's inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bpo_data.card import write_card
from bpo_data.export_stats import ExportStats, LengthCounter, write_composition_figure
from bpo_data.images import ImageError, image_bytes_for_dataset
from bpo_data.jsonl import count_lines, numbered_records
from bpo_data.manifest import read_manifest, recipe_of
from bpo_data.pipeline.filters import text_refusal
from bpo_data.recipe import FilterSpec
from bpo_data.schema import features
from bpo_data.smoke_model import SMOKE_MODEL_ID
from bpo_data.verify.card_stats import EvidenceStats, write_figure
from bpo_data.verify.evidence import Evidence, evidence_columns, preferred
from bpo_data.verify.filters import refusal
from bpo_data.verify.folder import read_evidence

log = logging.getLogger(__name__)

STATS_FILE = "export_stats.json"
CARD_FILE = "README.md"
EVIDENCE_FIGURE = "evidence.png"
COMPOSITION_FIGURE = "composition.png"
DATA_DIR = "data"
SPLITS = ("train", "test")
# Image datasets are read a row group at a time; ~100 rows keeps a group to tens of MB (as HF datasets does).
ROWS_PER_GROUP = 100
_PAIR_KEYS = ("key", "source", "negative_type", "image_path", "image_root", "prompt", "chosen", "rejected")


class ExportError(ValueError):
    """An export that cannot go on; the message names the file or directory and what to do."""


# Semantic versions: MAJOR.MINOR.PATCH, then an optional -prerelease and +build (``1.0.0-rc.1``).
_VERSION = re.compile(r"v?((0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?)")


def normalise_version(version: str) -> str:
    """``1.2.0`` or ``v1.2.0`` as ``1.2.0``: the card's version; ``push`` tags the Hub ``v1.2.0``."""
    match = _VERSION.fullmatch(version)
    if match is None:
        raise ExportError(
            f"--version {version!r} is not a version like 1.0.0: "
            "give MAJOR.MINOR.PATCH (a leading v is allowed)"
        )
    return match[1]


def test_side(image_path: str, test_size: float) -> bool:
    """Whether a pair of ``image_path`` belongs to the held-out split (a stable hash, not Python's)."""
    digest = hashlib.sha256(image_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_size


@dataclass(frozen=True)
class _ImageChecks:
    """How one generation folder's images are checked: its recipe's bounds and the folders it trusted."""

    max_pixels: int
    max_aspect_ratio: float
    trusted: tuple[str, ...]

    def bytes_of(self, record: dict[str, Any]) -> bytes:
        return image_bytes_for_dataset(
            record["image_root"],
            record["image_path"],
            self.max_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            trusted=self.trusted,
        )


def _image_checks(manifest: dict[str, Any], trusted: list[str]) -> _ImageChecks:
    recipe = recipe_of(manifest)
    return _ImageChecks(
        recipe.images.max_pixels,
        recipe.images.max_aspect_ratio,
        tuple(manifest.get("run", {}).get("trust_image_dirs", [])) + tuple(trusted),
    )


def export_dataset(
    out_dirs: list[str | os.PathLike],
    to: str | os.PathLike,
    version: str,
    rows_per_file: int = 10_000,
    progress: bool = False,
    repo_id: str | None = None,
    trusted: list[str] | None = None,
    filters: Sequence[FilterSpec] = (),
    test_size: float = 0.0,
) -> ExportStats:
    """Merge the pairs of ``out_dirs`` (first key wins) into ``to``: parquet shards, README.md card, stats.

    ``to`` must be empty, absent, or a previous export, which is replaced only once the new one is
    complete. ``repo_id`` only fills the ``load_dataset`` example in the card. ``trusted`` adds
    folders outside the image roots that symbolic links may lead to (beside those each generation
    run trusted). ``filters`` are recipe filters applied at export (a pair's evidence comes from its
    record or from the folder's ``verified-*.jsonl``); what they drop is counted in the stats and card.
    ``test_size`` (0 to 1) holds out that share of the images, with all their pairs, as a test split.
    """
    if rows_per_file < 1:
        raise ExportError(f"rows_per_file must be at least 1, got {rows_per_file}")
    if not 0.0 <= test_size < 1.0:
        raise ExportError(
            f"--test-size {test_size}: give a share of the images from 0 (no test split) to below 1"
        )
    version = normalise_version(version)
    inputs = [Path(d) for d in out_dirs]
    manifests = [_read_manifest(d) for d in inputs]
    # Each folder's images are checked as the run that made it checked them.
    checks = {d: _image_checks(m, trusted or []) for d, m in zip(inputs, manifests)}
    target = Path(to)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "tmp"), dir=target.parent))
    try:
        stats = ExportStats(version=version, test_size=test_size)
        stats.smoke = any(m.get("model") == SMOKE_MODEL_ID for m in manifests)
        pair_keys: set[str] = set()
        evidence = EvidenceStats()
        _write_parquet(
            inputs, staging / DATA_DIR, stats, pair_keys, rows_per_file, checks, progress, filters, evidence
        )
        stats.composition_figure = write_composition_figure(stats, staging / COMPOSITION_FIGURE)
        stats.evidence = evidence.to_dict()
        stats.evidence_figure = bool(stats.evidence["clip_margin"] or stats.evidence["objects_added"]) and (
            write_figure(evidence, staging / EVIDENCE_FIGURE)
        )
        stats.generation_rejects = _count_rejects(inputs, pair_keys)
        (staging / STATS_FILE).write_text(json.dumps(stats.to_dict(), indent=2) + "\n", encoding="utf-8")
        write_card(staging / CARD_FILE, stats, manifests, repo_id=repo_id)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stats


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise ExportError(
            f"{out_dir} has no manifest.json: give the output directory of a `bpo-data generate` run"
        )
    return manifest


def _check_target(target: Path) -> None:
    """Refuse to overwrite anything that is not a previous export of ours."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file; give a directory to export into")
    if not target.exists() or not any(target.iterdir()):
        return
    ours = {DATA_DIR, CARD_FILE, STATS_FILE, EVIDENCE_FIGURE, COMPOSITION_FIGURE}
    entries = {p.name for p in target.iterdir()}
    if (target / STATS_FILE).is_file() and entries <= ours:
        return
    raise ExportError(
        f"{target} is not empty and is not a bpo-data export (it holds {sorted(entries)[:5]}); "
        "export into a new or empty directory"
    )


def _staging_prefix(target: Path, kind: str) -> str:
    """``.NAME.tmp-HOST-PID-``: who made a staging folder, so a later export can tell an abandoned one."""
    return f".{target.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _remove_abandoned(target: Path) -> None:
    """Remove staging folders that exports killed on this host left beside ``target``.

    Only folders whose process is gone are removed; on shared storage another host's folders are
    left alone (their process cannot be checked from here).
    """
    pattern = re.compile(re.escape(f".{target.name}.") + r"(?:tmp|old)-(.+)-(\d+)-[^-]+")
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and match[1] == socket.gethostname() and not _alive(int(match[2])) and entry.is_dir():
            log.warning("removing %s, left by an export that was killed", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put the finished export at ``target``; a previous export is moved aside first and then removed."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=_staging_prefix(target, "old"), dir=target.parent))
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


def _iter_pairs(
    inputs: list[Path], stats: ExportStats, seen: set[str]
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, pair) in input order, each key once (the first wins); ``seen`` collects the keys."""
    for out_dir in inputs:
        files = _shard_files(out_dir, "pairs")
        if not files:
            raise ExportError(
                f"{out_dir} holds no pairs-*.jsonl shard files; has `bpo-data generate` run there?"
            )
        for path in files:
            for number, record in _read_lines(path, stats):
                problem = _not_a_pair(record)
                if problem:
                    raise ExportError(
                        f"{path}:{number} {problem}: it is not a bpo-data pair; "
                        "remove the line or the file from the output directory"
                    )
                if record["key"] in seen:
                    stats.duplicates_dropped += 1
                    continue
                seen.add(record["key"])
                yield out_dir, record


def _not_a_pair(record: dict[str, Any]) -> str | None:
    """What makes a shard line unusable as a pair, or None: keys present, and of the right shapes."""
    missing = [k for k in _PAIR_KEYS if k not in record]
    if missing:
        return f"lacks {missing}"
    texts = ("key", "source", "negative_type", "image_path", "image_root", "chosen", "rejected")
    wrong = [k for k in texts if not isinstance(record[k], str)]
    prompt = record["prompt"]
    if not isinstance(prompt, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in prompt
    ):
        wrong.append("prompt")
    return (
        f"has {wrong} of the wrong type (prompt: a list of role/content messages; the rest text)"
        if wrong
        else None
    )


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


def _filtered(record: dict[str, Any], evidence: Evidence | None, filters: Sequence[FilterSpec]) -> str | None:
    """The threshold of the first export filter the pair misses (``filter:<threshold>``), or None."""
    for spec in filters:
        if spec.negative_type not in (None, record["negative_type"]):
            continue
        refused = text_refusal(spec, record["chosen"], record["rejected"]) or refusal(evidence, spec)
        if refused is not None:
            return f"filter:{refused[0]}"
    return None


def _row(record: dict[str, Any], image: bytes, evidence: Evidence | None) -> dict[str, Any]:
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
        **evidence_columns(evidence.to_dict() if evidence else None),
    }


_IMAGE_BYTES = "images.list.element.bytes"


def _column_options(schema: pa.Schema) -> dict[str, Any]:
    """Image bytes are stored plain: JPEG and PNG are compressed already, and a dictionary over
    150 KB values only costs time (it took two thirds of the writer's time). Text keeps both."""
    leaves = [".".join(path) for field in schema for path in _leaf_paths(field.name, field.type)]
    return {
        "use_dictionary": [leaf for leaf in leaves if leaf != _IMAGE_BYTES],
        "compression": {leaf: "NONE" if leaf == _IMAGE_BYTES else "SNAPPY" for leaf in leaves},
    }


def _leaf_paths(name: str, kind: pa.DataType) -> list[tuple[str, ...]]:
    """Parquet column paths under one field (``images.list.element.bytes``…)."""
    if pa.types.is_list(kind):
        return [(name, "list", *rest) for rest in _leaf_paths("element", kind.value_type)]
    if pa.types.is_struct(kind):
        return [(name, *rest) for child in kind for rest in _leaf_paths(child.name, child.type)]
    return [(name,)]


class _ShardWriter:
    """Rolls parquet files every ``rows_per_file`` rows; final names are given once the count is known.

    Row groups are encoded and written on a thread of their own (pyarrow lets go of the GIL while
    it does), so reading the next pairs and their images overlaps writing the last ones: with
    real-size images the writes are a third of the export. At most two groups wait for it.
    """

    def __init__(self, data_dir: Path, rows_per_file: int, split: str = "train"):
        self.data_dir = data_dir
        self.rows_per_file = rows_per_file
        self.split = split
        self.schema = features().arrow_schema
        self.parts: list[Path] = []
        self._writer: pq.ParquetWriter | None = None  # touched by the writer thread only
        self._rows_in_file = 0
        self._buffer: list[dict[str, Any]] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: deque[Future] = deque()
        data_dir.mkdir(parents=True, exist_ok=True)

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
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._buffer = []
        self._rows_in_file += table.num_rows
        last_in_file = self._rows_in_file >= self.rows_per_file
        if last_in_file:
            self._rows_in_file = 0
        self._pending.append(self._thread.submit(self._write, table, last_in_file))
        while len(self._pending) > 2:
            self._pending.popleft().result()  # an error on the writer thread is raised here

    def _write(self, table: pa.Table, last_in_file: bool) -> None:
        if self._writer is None:
            part = self.data_dir / f"{self.split}-part-{len(self.parts):05d}.parquet"
            self.parts.append(part)
            self._writer = pq.ParquetWriter(part, self.schema, **_column_options(self.schema))
        self._writer.write_table(table)
        if last_in_file:
            self._writer.close()
            self._writer = None

    def _finish_writes(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._thread.shutdown(wait=True, cancel_futures=True)
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def close(self) -> list[str]:
        """Finish the last file and rename all to ``SPLIT-0000i-of-0000N.parquet``; return relative paths."""
        self._flush()
        self._finish_writes()
        names = []
        for index, part in enumerate(self.parts):
            name = f"{self.split}-{index:05d}-of-{len(self.parts):05d}.parquet"
            part.rename(self.data_dir / name)
            names.append(f"{DATA_DIR}/{name}")
        return names

    def abort(self) -> None:
        """Stop writing (the export failed): the thread must not write into a folder being removed."""
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._finish_writes()


def _write_parquet(
    inputs: list[Path],
    data_dir: Path,
    stats: ExportStats,
    pair_keys: set[str],
    rows_per_file: int,
    checks: dict[Path, _ImageChecks],
    progress: bool,
    filters: Sequence[FilterSpec],
    evidence_stats: EvidenceStats,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    writers = {split: _ShardWriter(data_dir, rows_per_file, split) for split in SPLITS}
    counts: Counter = Counter()
    error_types: Counter = Counter()
    generators: Counter = Counter()
    image_errors: Counter = Counter()
    lengths: dict[str, dict[str, LengthCounter]] = {}
    filtered: Counter = Counter()
    verified: dict[Path, dict[str, Evidence]] = {}
    # Counting the lines first is cheap beside the images: it gives the bar its total (lines, so
    # duplicates and filtered pairs advance it too).
    total = sum(count_lines(f) for d in inputs for f in _shard_files(d, "pairs")) if progress else None
    with Progress(
        TextColumn("export"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pairs read"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
    ) as bar:
        task = bar.add_task("export", total=total)
        try:
            for out_dir, record in _iter_pairs(inputs, stats, pair_keys):
                bar.advance(task)
                if out_dir not in verified:
                    verified[out_dir] = read_evidence(out_dir, from_pairs=False)
                inline = record.get("evidence")
                evidence = preferred(
                    Evidence.from_dict(inline) if isinstance(inline, dict) else None,
                    verified[out_dir].get(record["key"]),
                )
                reason = _filtered(record, evidence, filters)
                if reason is not None:
                    filtered[reason] += 1
                    continue
                try:
                    image = checks[out_dir].bytes_of(record)
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
                row = _row(record, image, evidence)
                test = stats.test_size > 0 and test_side(record["image_path"], stats.test_size)
                writers["test" if test else "train"].add(row)
                stats.test_pairs += bool(test)
                error_types.update(row["error_types"])
                evidence_stats.add(row["negative_type"], evidence)
                counts[(row["source"], row["negative_type"])] += 1
                generators[row["generator"]] += 1
                per_type = lengths.setdefault(
                    row["negative_type"], {k: LengthCounter() for k in ("prompt", "chosen", "rejected")}
                )
                per_type["prompt"].add(sum(_words(m["content"]) for m in row["prompt"]))
                per_type["chosen"].add(_words(record["chosen"]))
                per_type["rejected"].add(_words(record["rejected"]))
                stats.pairs += 1
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
    stats.files = [name for split in SPLITS for name in writers[split].close()]
    if stats.pairs == 0:
        raise ExportError(
            f"no exportable pairs in {[str(d) for d in inputs]} "
            f"(duplicates {stats.duplicates_dropped}, image errors {dict(image_errors)}, "
            f"filtered {dict(filtered)}, "
            f"torn lines {stats.torn_lines}); see the warnings above for each skipped pair"
        )
    for (source, negative_type), n in sorted(counts.items()):
        stats.counts.setdefault(source, {})[negative_type] = n
    stats.generators = dict(sorted(generators.items()))
    stats.image_errors = dict(sorted(image_errors.items()))
    stats.filtered = dict(sorted(filtered.items()))
    stats.lengths = {t: {k: c.summary() for k, c in per.items()} for t, per in sorted(lengths.items())}
    stats.length_histograms = {
        t: {k: dict(sorted(per[k].histogram.items())) for k in ("chosen", "rejected")}
        for t, per in sorted(lengths.items())
    }
    stats.error_types = dict(error_types.most_common())
