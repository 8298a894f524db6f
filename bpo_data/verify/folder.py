"""``bpo-data verify DIR``: add evidence to the pairs of a generation folder, resumable like generation.

Shard ``i/N`` of the verification owns the pair keys that hash to ``i`` (``bpo_data.hashing.shard_of``,
the same split as generation) and appends one line per pair to ``verified-i-of-N.jsonl``::

    {"key": "sharegptv/123/0#inject", "evidence": {"objects_added": […], "clip_chosen": 0.31, …}}

written and fsynced per batch. A rerun skips every key already in any ``verified-*.jsonl`` of the
folder (whatever N was) and every pair whose record carries evidence from generation, cuts a torn
last line, and takes a lock so two processes never write one file. A folder is verified with one
CLIP model: a rerun with another is refused, since filters would compare scores of two models.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from bpo_data.hashing import shard_of
from bpo_data.images import ImageError, load_image
from bpo_data.jsonl import iter_jsonl, repair_tail
from bpo_data.verify.clip import ClipScorer
from bpo_data.verify.evidence import Evidence, PairText, measure, preferred

VERIFIED_GLOB = "verified-*.jsonl"


class VerifyError(RuntimeError):
    """A folder that cannot be verified as asked; the message says what to do."""


@dataclass
class VerifySummary:
    shard: str
    clip_model: str | None
    pairs_seen: int = 0
    already_verified: int = 0
    verified: int = 0
    no_clip_score: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        rate = self.verified / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return {
            "shard": self.shard,
            "clip_model": self.clip_model,
            "pairs_seen": self.pairs_seen,
            "already_verified": self.already_verified,
            "verified": self.verified,
            "no_clip_score": dict(self.no_clip_score),
            "elapsed_s": round(self.elapsed_s, 3),
            "pairs_per_s": round(rate, 3),
        }


def verified_file(out_dir: Path, index: int, num_shards: int) -> Path:
    return out_dir / f"verified-{index:05d}-of-{num_shards:05d}.jsonl"


def read_evidence(out_dir: str | os.PathLike, from_pairs: bool = True) -> dict[str, Evidence]:
    """Evidence by pair key: from ``verified-*.jsonl`` files, then from pair records (the first
    complete one wins: a rerun of ``bpo-data verify`` after an upgrade adds what older evidence lacks).

    Export passes ``from_pairs=False``: it reads each pair record's own evidence as it streams them.
    """
    out_dir = Path(out_dir)
    found: dict[str, Evidence] = {}
    paths = sorted(out_dir.glob(VERIFIED_GLOB))
    if from_pairs:
        paths += sorted(out_dir.glob("pairs-*.jsonl"))
    for path in paths:
        for record in iter_jsonl(path):
            if "key" in record and isinstance(record.get("evidence"), dict):
                key = record["key"]
                found[key] = preferred(found.get(key), Evidence.from_dict(record["evidence"]))
    return found


def _done(out_dir: Path, scorer: ClipScorer | None) -> set[str]:
    done: set[str] = set()
    models: set[str] = set()
    for key, evidence in read_evidence(out_dir).items():
        if evidence.complete:  # evidence from an older version is measured again, whole
            done.add(key)
        if evidence.clip_model:
            models.add(evidence.clip_model)
    wanted = scorer.model_id if scorer is not None else None
    if wanted is not None and models - {wanted}:
        raise VerifyError(
            f"{out_dir} was verified with {sorted(models)}, not {wanted}: pass the same --clip-model, or "
            "verify a copy of the folder without its verified-*.jsonl files"
        )
    return done


def _todo(
    out_dir: Path, index: int, num_shards: int, done: set[str], summary: VerifySummary
) -> Iterator[dict]:
    seen: set[str] = set()
    for path in sorted(out_dir.glob("pairs-*.jsonl")):
        for record in iter_jsonl(path):
            key = record.get("key")
            if key is None or key in seen or shard_of(key, num_shards) != index:
                continue
            seen.add(key)
            summary.pairs_seen += 1
            if key in done:
                summary.already_verified += 1
                continue
            yield record


def verify_folder(
    out_dir: str | os.PathLike,
    scorer: ClipScorer | None,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 64,
    max_pixels: int = 64_000_000,
    progress: Callable[[int], None] | None = None,
) -> VerifySummary:
    """Verify shard ``shard`` = (i, N) of the pairs in ``out_dir``; call again to resume."""
    out_dir = Path(out_dir)
    if not any(out_dir.glob("pairs-*.jsonl")):
        raise VerifyError(
            f"{out_dir} holds no pairs-*.jsonl files; give the folder a `bpo-data generate` wrote"
        )
    index, num_shards = shard
    started = time.perf_counter()
    summary = VerifySummary(f"{index}/{num_shards}", scorer.model_id if scorer else None)
    target = verified_file(out_dir, index, num_shards)
    lock = FileLock(out_dir / f".lock-{target.stem}")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise VerifyError(f"another process is verifying shard {index}/{num_shards} of {out_dir}") from None
    try:
        repair_tail(target)
        done = _done(out_dir, scorer)
        with open(target, "ab") as handle:
            batch: list[dict] = []
            for record in _todo(out_dir, index, num_shards, done, summary):
                batch.append(record)
                if len(batch) >= batch_size:
                    _write(handle, batch, scorer, max_pixels, summary, progress)
                    batch = []
            _write(handle, batch, scorer, max_pixels, summary, progress)
        summary.elapsed_s = time.perf_counter() - started
        summary_path = out_dir / f"verify-summary-{index:05d}-of-{num_shards:05d}.json"
        summary_path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    finally:
        lock.release()
    return summary


def _write(handle, batch: list[dict], scorer, max_pixels: int, summary: VerifySummary, progress) -> None:
    if not batch:
        return
    texts = [PairText.from_record(record) for record in batch]
    loaded: dict[str, object] = {}  # the turns of one record share their picture: decode it once
    images = []
    for record, text in zip(batch, texts):
        if scorer is not None and text.image_key not in loaded:
            loaded[text.image_key] = _image(record, max_pixels, summary)
        images.append(loaded.get(text.image_key))
    lines = b"".join(
        json.dumps({"key": r["key"], "evidence": e.to_dict()}, ensure_ascii=False).encode() + b"\n"
        for r, e in zip(batch, measure(texts, images, scorer))
    )
    handle.write(lines)
    handle.flush()
    os.fsync(handle.fileno())
    summary.verified += len(batch)
    if progress is not None:
        progress(len(batch))


def _image(record: dict, max_pixels: int, summary: VerifySummary):
    try:
        return load_image(record["image_root"], record["image_path"], max_pixels)
    except ImageError as err:
        summary.no_clip_score[err.reason] += 1
        return None
