"""The shard store: append-only JSONL files that make a run resumable after ``kill -9``.

Each shard ``i/N`` appends finished pairs to ``pairs-i-of-N.jsonl`` and failures to
``rejects-i-of-N.jsonl``, flushed and fsynced per batch. On start it reads the keys already
written by *every* shard file in the directory (so a rerun with another shard count skips them
too), cuts a torn last line off its own files, and takes an exclusive lock so a second process
cannot write the same shard at the same time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock, Timeout

from bpo_data.jsonl import iter_jsonl, repair_tail
from bpo_data.schema import Pair, Reject

# Rejects with these reasons are retried by a rerun: the unit may well succeed next time.
RETRYABLE_REASONS = frozenset({"engine_error"})


class ShardBusy(RuntimeError):
    """Another live process holds the shard's lock."""


def shard_name(kind: str, index: int, num_shards: int) -> str:
    return f"{kind}-{index:05d}-of-{num_shards:05d}.jsonl"


def parse_shard_spec(text: str) -> tuple[int, int]:
    """``"3/8"`` → (3, 8), with a message that says what a valid spec looks like."""
    try:
        index_text, total_text = text.split("/")
        index, total = int(index_text), int(total_text)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/1 or 3/8") from None
    if total < 1 or not 0 <= index < total:
        raise ValueError(f"--shard {text!r}: need 0 <= i < N")
    return index, total


class ShardStore:
    """Owns one shard's files for the life of a run (use as a context manager)."""

    def __init__(self, out_dir: str | os.PathLike, index: int, num_shards: int):
        self.out_dir = Path(out_dir)
        self.index = index
        self.num_shards = num_shards
        self.pairs_path = self.out_dir / shard_name("pairs", index, num_shards)
        self.rejects_path = self.out_dir / shard_name("rejects", index, num_shards)
        self.lock_path = self.out_dir / f".lock-{index:05d}-of-{num_shards:05d}"
        self.pid_path = self.out_dir / f".pid-{index:05d}-of-{num_shards:05d}"
        self._lock = FileLock(self.lock_path)
        self._pairs = None
        self._rejects = None
        self.torn_bytes = 0

    def __enter__(self) -> ShardStore:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self.pid_path.read_text().strip() if self.pid_path.exists() else "unknown"
            raise ShardBusy(
                f"shard {self.index}/{self.num_shards} in {self.out_dir} is being written by another "
                f"process (pid {holder}); wait for it to finish or stop it before rerunning"
            ) from None
        self.pid_path.write_text(str(os.getpid()))
        self.torn_bytes = repair_tail(self.pairs_path) + repair_tail(self.rejects_path)
        self._pairs = open(self.pairs_path, "ab")
        self._rejects = open(self.rejects_path, "ab")
        return self

    def __exit__(self, *exc) -> None:
        for handle in (self._pairs, self._rejects):
            if handle is not None:
                handle.close()
        self.pid_path.unlink(missing_ok=True)
        self._lock.release()

    def done_keys(self) -> set[str]:
        """Keys written by any shard of this directory (pairs, and rejects that are final)."""
        return done_keys(self.out_dir)

    def write_summary(self, summary: dict) -> None:
        """The last run's summary of this shard, for people and for status tools."""
        _write_json(self.out_dir / f"summary-{self.index:05d}-of-{self.num_shards:05d}.json", summary)

    def write_plan(self, plan: dict) -> None:
        """What this run is about to make (its pair keys), so ``bpo-data status`` can count progress live."""
        _write_json(self.out_dir / plan_name(self.index, self.num_shards), plan)

    def write(self, pairs: Iterable[Pair], rejects: Iterable[Reject]) -> None:
        """Append one batch durably: a crash after this returns loses nothing of it."""
        for handle, records in ((self._pairs, pairs), (self._rejects, rejects)):
            lines = b"".join(json.dumps(r.to_dict(), ensure_ascii=False).encode() + b"\n" for r in records)
            if lines:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())


# Helpers shared with `bpo-data status`, which reads a directory without owning any shard.


def plan_name(index: int, num_shards: int) -> str:
    return f"plan-{index:05d}-of-{num_shards:05d}.json"


def done_keys(out_dir: str | os.PathLike) -> set[str]:
    """Keys written by any shard file of ``out_dir`` (pairs, and rejects that are final)."""
    out_dir = Path(out_dir)
    done: set[str] = set()
    for path in sorted(out_dir.glob("pairs-*.jsonl")):
        done.update(rec["key"] for rec in iter_jsonl(path) if "key" in rec)
    for path in sorted(out_dir.glob("rejects-*.jsonl")):
        done.update(
            rec["key"]
            for rec in iter_jsonl(path)
            if "key" in rec and rec.get("reason") not in RETRYABLE_REASONS
        )
    return done


def lock_is_held(lock_path: Path) -> bool:
    """Whether a live process holds a shard lock, probed with a non-blocking acquire that is released at once.

    A process killed with ``kill -9`` leaves its lock file behind but not the lock, so this tells a
    running shard from a dead one. The probe holds the lock for microseconds; a shard starting in
    exactly that instant reports ``ShardBusy`` and can simply be rerun.
    """
    if not lock_path.exists():
        return False
    probe = FileLock(lock_path)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
