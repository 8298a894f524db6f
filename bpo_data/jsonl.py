"""Append-only JSON Lines files that survive ``kill -9``: read past a torn last line, cut it before appending.

Shard files and the judge cache are both written this way: one JSON object per line, flushed and
fsynced per batch, so a crash loses at most the line being written, and a reader (or the next
writer) recognises that torn line by its missing newline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path


def numbered_records(
    path: Path, on_skip: Callable[[int, bool], None] | None = None
) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each JSON object line of a shard file.

    A line that is not one — a write torn by a kill (no newline; read as bytes, since it may end
    inside a UTF-8 character) or a corrupt line — is skipped and reported to
    ``on_skip(line number, ends_with_newline)``; readers decide whether that deserves a warning.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            complete = raw.endswith(b"\n")
            try:
                record = json.loads(raw) if complete else None
            except ValueError:
                record = None
            if isinstance(record, dict):
                yield number, record
            elif on_skip is not None:
                on_skip(number, complete)


def iter_jsonl(path: Path) -> Iterator[dict]:
    """The records of a shard file, torn and corrupt lines skipped."""
    for _, record in numbered_records(path):
        yield record


def repair_tail(path: Path) -> int:
    """Cut everything after the last newline; returns the bytes removed (a torn last record)."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        return size - keep


def count_lines(path: Path) -> int:
    """Complete lines of a shard file (a torn last line is not a record); 0 when it does not exist."""
    if not path.exists():
        return 0
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return lines
