"""The shard store: append-only JSONL files that make a run resumable after ``kill -9``.

Each shard ``i/N`` appends finished pairs to ``pairs-i-of-N.jsonl`` and failures to
``rejects-i-of-N.jsonl``, flushed and fsynced per batch. On start it reads the keys already
written by *every* shard file in the directory (so a rerun with another shard count skips them
too), cuts a torn last line off its own files, and takes an exclusive lock so a second process
cannot write the same shard at the same time.

``ShardFiles`` is the one place that names a shard's files; the store, ``bpo-data status`` and
``launch`` all go through it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from bpo_data.jsonl import iter_jsonl, repair_tail
from bpo_data.schema import Pair, Reject

# Rejects with these reasons are retried by a rerun: the unit may well succeed next time.
RETRYABLE_REASONS = frozenset({"engine_error"})

_FILE = re.compile(r"^\.?(pairs|rejects|summary|plan|lock|pid)-(\d+)-of-(\d+)(?:\.jsonl|\.json)?$")


class ShardBusy(RuntimeError):
    """Another live process holds the shard's lock, or runs shards of another count in the folder."""


class UnwritableRecord(ValueError):
    """A pair that cannot be written as UTF-8 JSON (a lone surrogate, say); the caller rejects it instead."""


@dataclass(frozen=True)
class ShardFiles:
    """The files of shard ``index``/``num_shards`` in ``out_dir``."""

    out_dir: Path
    index: int
    num_shards: int

    @property
    def stem(self) -> str:
        return f"{self.index:05d}-of-{self.num_shards:05d}"

    @property
    def label(self) -> str:
        return f"{self.index}/{self.num_shards}"

    @property
    def pairs(self) -> Path:
        return self.out_dir / f"pairs-{self.stem}.jsonl"

    @property
    def rejects(self) -> Path:
        return self.out_dir / f"rejects-{self.stem}.jsonl"

    @property
    def plan(self) -> Path:
        """What the last run set out to make (its pair keys), written when it starts."""
        return self.out_dir / f"plan-{self.stem}.json"

    @property
    def summary(self) -> Path:
        """The last run's summary, written when it ends."""
        return self.out_dir / f"summary-{self.stem}.json"

    @property
    def lock(self) -> Path:
        return self.out_dir / f".lock-{self.stem}"

    @property
    def pid(self) -> Path:
        return self.out_dir / f".pid-{self.stem}"

    @property
    def log(self) -> Path:
        """Where ``launch`` appends the shard's output."""
        return self.out_dir / "logs" / f"shard-{self.stem}.log"

    @classmethod
    def found(cls, out_dir: str | os.PathLike) -> list[ShardFiles]:
        """Every shard with a file in ``out_dir``, whatever the shard counts, ordered by (N, i)."""
        out_dir = Path(out_dir)
        ids = {(int(m[2]), int(m[3])) for p in out_dir.iterdir() if (m := _FILE.match(p.name))}
        return [cls(out_dir, index, total) for index, total in sorted(ids, key=lambda i: (i[1], i[0]))]


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
        self.files = ShardFiles(Path(out_dir), index, num_shards)
        self._lock = FileLock(self.files.lock)
        self._pairs = None
        self._rejects = None
        self.torn_bytes = 0

    def __enter__(self) -> ShardStore:
        files = self.files
        files.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = files.pid.read_text().strip() if files.pid.exists() else "unknown"
            raise ShardBusy(
                f"shard {files.label} in {files.out_dir} is being written by another "
                f"process (pid {holder}); wait for it to finish or stop it before rerunning"
            ) from None
        try:
            _refuse_other_shard_counts(files)
            files.pid.write_text(str(os.getpid()))
            self.torn_bytes = repair_tail(files.pairs) + repair_tail(files.rejects)
            self._pairs = open(files.pairs, "ab")
            self._rejects = open(files.rejects, "ab")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in (self._pairs, self._rejects):
            if handle is not None:
                handle.close()
        self.files.pid.unlink(missing_ok=True)
        self._lock.release()

    def done_keys(self) -> set[str]:
        """Keys written by any shard of this directory (pairs, and rejects that are final)."""
        return done_keys(self.files.out_dir)

    def write_summary(self, summary: dict) -> None:
        _write_json(self.files.summary, summary)

    def write_plan(self, plan: dict) -> None:
        _write_json(self.files.plan, plan)

    def read_plan(self) -> dict | None:
        """The last run's plan record; None if there is none or it cannot be read (the plan is made again)."""
        try:
            plan = json.loads(self.files.plan.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return plan if isinstance(plan, dict) else None

    def write(self, pairs: Iterable[Pair], rejects: Iterable[Reject], sync: bool = True) -> None:
        """Append records and hand them to the OS, so a killed process loses none of them.

        ``sync`` also forces them to disk (fsync), so a machine that loses power or is preempted
        loses none either; callers writing one record at a time sync every group instead.
        """
        encoded = (b"".join(map(_pair_line, pairs)), b"".join(map(_reject_line, rejects)))
        for handle, lines in zip((self._pairs, self._rejects), encoded):
            if lines:
                handle.write(lines)
                handle.flush()
        if sync:
            self.sync()

    def sync(self) -> None:
        for handle in (self._pairs, self._rejects):
            os.fsync(handle.fileno())


def _pair_line(pair: Pair) -> bytes:
    try:
        return json.dumps(pair.to_dict(), ensure_ascii=False).encode() + b"\n"
    except (UnicodeEncodeError, ValueError, TypeError) as err:
        raise UnwritableRecord(f"pair {pair.key!r} cannot be written as UTF-8 JSON ({err})") from err


def _reject_line(reject: Reject) -> bytes:
    """A reject always gets written: text that is not UTF-8 is kept as JSON escapes."""
    record = reject.to_dict()
    try:
        return json.dumps(record, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(record).encode() + b"\n"


def _refuse_other_shard_counts(files: ShardFiles) -> None:
    """Refuse to start while shards of another count write the folder: each count splits the units
    its own way, so both would make every unit (export keeps one copy, but the work is doubled).

    Runs after this shard holds its lock: of two counts starting together, the later to look sees
    the other (at worst both refuse, and a rerun goes ahead).
    """
    live = [
        other
        for other in ShardFiles.found(files.out_dir)
        if other.num_shards != files.num_shards and lock_is_held(other.lock)
    ]
    if live:
        labels = ", ".join(other.label for other in live[:4]) + (" …" if len(live) > 4 else "")
        counts = sorted({other.num_shards for other in live})
        raise ShardBusy(
            f"{files.out_dir} is being written by shards of another count ({labels}); shard "
            f"{files.label} would make their units a second time. Run this shard with --shard i/"
            f"{counts[0]}, or wait for them to finish (a shard count may change between runs, not during one)"
        )


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
