"""``bpo-data status DIR``: how far each shard of a generation folder is, and whether it is still running.

It only reads: the shard files (``pairs-``/``rejects-i-of-N.jsonl``), each run's plan (its pair
keys, written when the run starts) and summary (written when it ends), and the shard locks. Progress
is counted by key, so a folder filled with several shard counts (resharded between runs) still shows
exactly which planned pairs are done, whoever wrote them.

Shards that have not started yet are listed too (state ``pending``): the shard count comes from the
newest launch job (``launch/job-*.json``) or else the newest plan. Their pairs are not planned yet, so
the folder's total is then estimated from the shards that planned (shards get equal shares by hash),
and the ETA is what is left over the rate of the shards running now.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bpo_data.store import RETRYABLE_REASONS, ShardFiles, lock_is_held


@dataclass
class ShardStatus:
    """One shard ``index/num_shards`` of a folder; ``planned`` is None when no run of it got to plan."""

    index: int
    num_shards: int
    state: str  # running | complete | incomplete | pending (no file yet)
    done: int
    planned: int | None
    pairs: int
    rejects: dict[str, int] = field(default_factory=dict)
    pairs_per_s: float | None = None
    last_write: str | None = None
    live: bool = False
    pid: int | None = None
    host: str | None = None

    @property
    def shard(self) -> str:
        return f"{self.index}/{self.num_shards}"

    def to_dict(self) -> dict:
        return {"shard": self.shard, **asdict(self)}


@dataclass
class FolderStatus:
    out_dir: str
    shards: list[ShardStatus]
    done: int
    planned: int | None  # the planned keys of every shard that planned
    planned_estimate: int | None = None  # with the pending shards' likely share; None: nothing to go on
    eta_s: float | None = None  # None: nothing is running (or nothing is left)

    @property
    def pending(self) -> int:
        return sum(s.state == "pending" for s in self.shards)

    def to_dict(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "done": self.done,
            "planned": self.planned,
            "planned_estimate": self.planned_estimate,
            "pending": self.pending,
            "eta_s": self.eta_s,
            "shards": [s.to_dict() for s in self.shards],
        }


def _read_json(path: Path) -> dict | None:
    """A plan or summary; None when absent or half-written (they are replaced atomically, so rarely)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@dataclass
class _Written:
    """What one shard's files hold, from a single pass over each: status parses every line once."""

    pairs: int = 0
    rejects: Counter = field(default_factory=Counter)
    done: set[str] = field(default_factory=set)  # pair keys, and reject keys that are final


def _new_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """The whole lines appended to ``path`` since byte ``offset``, and the offset after them.

    A file shorter than ``offset`` was cut back (a torn tail repaired on resume): -1 says read it again.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    if size < offset:
        return [], -1
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size - offset)
    end = data.rfind(b"\n") + 1  # a line still being written is read next time, whole
    return data[:end].splitlines(), offset + end


def _records(lines: list[bytes]):
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a torn or corrupt line, as iter_jsonl skips it
            continue
        if isinstance(record, dict):
            yield record


class StatusReader:
    """Reads a folder's shard files incrementally: each call parses only the lines added since the last.

    ``bpo-data launch`` redraws the status every few seconds while 167k pairs are written; reading
    every file from its start each time would parse the whole folder (and every plan's key list)
    again and again. One reader per view keeps per-file offsets, counts and plans (by mtime).
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self._written: dict[ShardFiles, _Written] = {}
        self._offsets: dict[Path, int] = {}
        self._plans: dict[Path, tuple[float | None, dict | None]] = {}

    def written(self, files: ShardFiles) -> _Written:
        state = self._written.setdefault(files, _Written())
        pairs, self._offsets[files.pairs] = _new_lines(files.pairs, self._offsets.get(files.pairs, 0))
        rejects, self._offsets[files.rejects] = _new_lines(files.rejects, self._offsets.get(files.rejects, 0))
        if -1 in (self._offsets[files.pairs], self._offsets[files.rejects]):
            self._written.pop(files)
            self._offsets.pop(files.pairs)
            self._offsets.pop(files.rejects)
            return self.written(files)
        for record in _records(pairs):
            state.pairs += 1
            if "key" in record:
                state.done.add(record["key"])
        for record in _records(rejects):
            reason = record.get("reason", "unknown")
            state.rejects[reason] += 1
            if "key" in record and reason not in RETRYABLE_REASONS:
                state.done.add(record["key"])
        return state

    def plan(self, files: ShardFiles) -> dict | None:
        mtime = _mtime(files.plan)
        cached = self._plans.get(files.plan)
        if cached is None or cached[0] != mtime:
            cached = self._plans[files.plan] = (mtime, _read_json(files.plan))
        return cached[1]


def _pairs_per_s(
    plan: dict | None,
    summary: dict | None,
    summary_time: float | None,
    pairs: int,
    live: bool,
    last_write: float | None,
) -> float | None:
    """A finished run's rate from its summary; for a run still going (or killed), pairs since its start."""
    if summary is not None and (plan is None or (summary_time or 0) >= plan["started_at"]):
        return summary["pairs_per_s"]
    if plan is None:
        return None
    elapsed = (time.time() if live else (last_write or 0)) - plan["started_at"]
    return (pairs - plan["pair_lines_at_start"]) / elapsed if elapsed > 0 else 0.0


def _shard_status(files: ShardFiles, plan: dict | None, written: _Written, done_set: set[str]) -> ShardStatus:
    summary = _read_json(files.summary)
    pairs, rejects = written.pairs, written.rejects
    writes = [t for t in (_mtime(files.pairs), _mtime(files.rejects)) if t is not None]
    last_write = max(writes) if writes else None
    pid = _read_pid(files.pid)
    # A clean exit removes the pid file, so only a live or killed holder needs the lock probe.
    live = pid is not None and lock_is_held(files.lock)

    if plan is not None:
        planned: int | None = len(plan["pair_keys"])
        done = len(done_set.intersection(plan["pair_keys"]))
    else:
        planned = summary["pairs_planned"] if summary else None
        final = sum(n for reason, n in rejects.items() if reason not in RETRYABLE_REASONS)
        done = pairs + final

    rate = _pairs_per_s(plan, summary, _mtime(files.summary), pairs, live, last_write)
    if live:
        state = "running"
    elif planned is not None and done >= planned:
        state = "complete"
    else:
        state = "incomplete"
    return ShardStatus(
        index=files.index,
        num_shards=files.num_shards,
        state=state,
        done=done,
        planned=planned,
        pairs=pairs,
        rejects=dict(sorted(rejects.items())),
        pairs_per_s=round(rate, 3) if rate is not None else None,
        last_write=_iso(last_write),
        live=live,
        pid=pid,
        host=plan.get("host") if plan and plan.get("pid") == pid else None,
    )


def _current_shard_count(out_dir: Path, found: list[ShardFiles]) -> int | None:
    """N of the newest launch job or plan, whichever is newer: the shard count the folder is run with now."""
    candidates: list[tuple[float, int]] = [
        (_mtime_or_zero(f.plan), f.num_shards) for f in found if f.plan.exists()
    ]
    for job in (out_dir / "launch").glob("job-*.json"):
        data = _read_json(job)
        if data and isinstance(data.get("num_shards"), int):
            candidates.append((_mtime_or_zero(job), data["num_shards"]))
    return max(candidates)[1] if candidates else None


def _mtime_or_zero(path: Path) -> float:
    return _mtime(path) or 0.0


def _pending(files: ShardFiles) -> ShardStatus:
    return ShardStatus(files.index, files.num_shards, "pending", done=0, planned=None, pairs=0)


def _estimate(shards: list[ShardStatus], planned: int | None, num_shards: int | None) -> int | None:
    """The folder's planned pairs with the pending shards' share guessed from those of the same N."""
    if planned is None or num_shards is None:
        return planned
    same_n = [s for s in shards if s.num_shards == num_shards]
    known = [s.planned for s in same_n if s.planned is not None]
    pending = sum(s.state == "pending" for s in same_n)
    if not known or not pending:
        return planned
    return planned + round(sum(known) / len(known) * pending)


def _eta(shards: list[ShardStatus], done: int, total: int | None) -> float | None:
    rate = sum(s.pairs_per_s or 0.0 for s in shards if s.live)
    if total is None or rate <= 0 or done >= total:
        return None
    return (total - done) / rate


def folder_status(out_dir: str | Path, reader: StatusReader | None = None) -> FolderStatus:
    """The status of every shard of ``out_dir`` (pending ones too); the totals count each planned key once.

    Pass the same ``reader`` to repeated calls (a live view) to read only what was added since.
    """
    out_dir = Path(out_dir)
    reader = reader or StatusReader(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir} is not a folder; give the --out folder of `bpo-data generate`")
    found = ShardFiles.found(out_dir)
    num_shards = _current_shard_count(out_dir, found)
    if not found and num_shards is None:
        raise FileNotFoundError(
            f"{out_dir} holds no shard files (pairs-i-of-N.jsonl); has `bpo-data generate` or "
            "`bpo-data launch` written there yet?"
        )
    written = {files: reader.written(files) for files in found}
    done_set: set[str] = set().union(*(w.done for w in written.values()))
    plans = {files: reader.plan(files) for files in found}
    shards = [_shard_status(files, plans[files], written[files], done_set) for files in found]
    started = {(s.index, s.num_shards) for s in shards}
    if num_shards is not None:
        shards += [
            _pending(ShardFiles(out_dir, i, num_shards))
            for i in range(num_shards)
            if (i, num_shards) not in started
        ]
        shards.sort(key=lambda s: (s.num_shards, s.index))
    planned_keys = {key for plan in plans.values() if plan is not None for key in plan["pair_keys"]}
    if planned_keys:
        done, planned = len(done_set & planned_keys), len(planned_keys)
    else:
        done, planned = len(done_set), None
    estimate = _estimate(shards, planned, num_shards)
    return FolderStatus(str(out_dir), shards, done, planned, estimate, _eta(shards, done, estimate))
