"""Records of a JSON array or a JSON Lines file, one at a time, in bounded memory and depth.

Both layouts give the same records and the same verdict on a bad one: each record's text is
parsed on its own by ``json``'s C decoder, so a broken record becomes a ``Broken`` entry naming
its position and reading goes on with the next one — in an array as in JSONL.

Arrays are split into items without building the list. ``json.JSONDecoder.raw_decode`` parses
the item at a position of a decoded window of the file and says where it ends; where it cannot
(a malformed item, or one the window's end cuts), a small scanner that follows only strings and
brackets finds the item's end, so a bad item is skipped alone instead of the rest of the file.
Measured against ``ijson`` on a 230 MB LLaVA-Instruct-like array (``benchmarks/json_array_reader.py``,
figures in BENCHMARKS.md): ijson's C backend needs gigabytes for one deeply nested item and stops
at an integer >= 2**63 or at ``1e400``; its Python backend is several times slower than this reader.

Bounds, the same for both layouts:

- at most ``MAX_RECORD_BYTES`` of text per record; a longer one is skipped while it is read,
  never held whole → ``record_too_large``;
- nesting at most ``MAX_DEPTH`` deep (LLaVA records are 3 deep) → ``too_deep``;
- bytes that are not UTF-8 → ``non_utf8``, for that record only;
- anything ``json`` refuses (syntax, an integer with more digits than Python converts) → ``corrupt_json``.
"""

from __future__ import annotations

import bisect
import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAX_RECORD_BYTES = 8 << 20  # LLaVA records are under 100 KB: room to spare, never gigabytes
MAX_DEPTH = 64
_CHUNK = 1 << 18

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_OUTSIDE = re.compile(r'[\[\]{}"]')  # what changes the depth or opens a string
_INSIDE = re.compile(r'["\\]')  # what closes a string or escapes the next character
_SCALAR_END = re.compile(r"[,\]\s]")
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as surrogateescape keeps it


@dataclass(frozen=True)
class Record:
    value: Any
    position: int  # 0-based array index or 0-based line number: the fallback id
    in_array: bool

    @property
    def where(self) -> str:
        """For people: "item 11" (0-based) or "line 12" (1-based)."""
        return f"item {self.position}" if self.in_array else f"line {self.position + 1}"

    @property
    def tag(self) -> str:
        """For reject keys: "item11" / "line12"."""
        return self.where.replace(" ", "")


@dataclass(frozen=True)
class Broken:
    """A record that could not be read, and why (``reason`` is the reject code)."""

    reason: str
    detail: str
    tag: str


class _Scanner:
    """Follows strings and brackets from the first character of one item to its end, across windows.

    Used only where ``raw_decode`` cannot say where an item ends, and to measure the depth of
    items with many brackets; ``feed`` may be called again with the next window.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.max_depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False
        self.scalar = False  # a number or a literal: it ends at "," or "]" or a space

    def feed(self, text: str, i: int, end: int | None = None) -> int | None:
        """Scan ``text[i:end]``: the index just past the item, or None when it goes on beyond."""
        end = len(text) if end is None else end
        if not self.started and i < end:
            self.started = True
            self.scalar = text[i] not in '[{"'
        while i < end:
            if self.escaped:
                self.escaped = False
                i += 1
            elif self.in_string:
                match = _INSIDE.search(text, i, end)
                if match is None:
                    return None
                i = match.end()
                if match.group() == "\\":
                    self.escaped = True
                else:
                    self.in_string = False
                    if self.depth == 0:
                        return i  # the item is a string
            elif self.scalar:
                match = _SCALAR_END.search(text, i, end)
                return None if match is None else match.start()
            else:
                match = _OUTSIDE.search(text, i, end)
                if match is None:
                    return None
                i = match.end()
                char = match.group()
                if char == '"':
                    self.in_string = True
                elif char in "[{":
                    self.depth += 1
                    self.max_depth = max(self.max_depth, self.depth)
                else:
                    self.depth -= 1
                    if self.depth <= 0:
                        return i
        return None


def _too_deep(text: str, start: int, end: int) -> bool:
    """Whether the complete item ``text[start:end]`` nests deeper than MAX_DEPTH.

    The number of opening brackets bounds the depth at no cost; only items with more than
    MAX_DEPTH of them (long conversations) are scanned exactly.
    """
    if text.count("[", start, end) + text.count("{", start, end) <= MAX_DEPTH:
        return False
    scanner = _Scanner()
    scanner.feed(text, start, end)
    return scanner.max_depth > MAX_DEPTH


def _broken(reason: str, where: str, tag: str, what: str = "") -> Broken:
    details = {
        "too_deep": f"nested more than {MAX_DEPTH} levels deep (LLaVA records are 3)",
        "record_too_large": f"longer than {MAX_RECORD_BYTES >> 20} MiB, far beyond any LLaVA record "
        "(skipped without being held in memory)",
        "corrupt_json": f"not valid JSON ({what})",
        "non_utf8": f"holds bytes that are not UTF-8 ({what})",
    }
    return Broken(
        reason, f"{where}: {details[reason]}; fix or remove it — the rest of the file is read as usual", tag
    )


def _unparsable(err: Exception, where: str, tag: str) -> Broken:
    if isinstance(err, RecursionError):
        return _broken("too_deep", where, tag)
    message = err.msg if isinstance(err, json.JSONDecodeError) else str(err).split(";")[0]
    return _broken("corrupt_json", where, tag, message)


def jsonl_records(handle: BinaryIO, path: Path) -> Iterator[Record | Broken]:
    """One record per non-blank line; a line longer than the limit is skipped as it is read."""
    index = -1
    while raw := handle.readline(MAX_RECORD_BYTES + 1):
        index += 1
        where, tag = f"{path} line {index + 1}", f"line{index + 1}"
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield _broken("record_too_large", where, tag)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _broken("non_utf8", where, tag, f"byte {err.start}: {err.reason}")
            continue
        text = text.lstrip("\ufeff")  # a BOM left where files were concatenated
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, or an int too long to convert
            yield _unparsable(err, where, tag)
            continue
        if _too_deep(text, 0, len(text)):
            yield _broken("too_deep", where, tag)
            continue
        yield Record(value, index, False)


class _Window:
    """The decoded text of the file from the item being read on; grows by chunks, drops what was read.

    Bytes that are not UTF-8 are kept as lone surrogates (``surrogateescape``) and their places
    remembered, so only the item holding one is rejected.
    """

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.text = ""
        self.eof = False
        self.offset = 0  # where ``text`` starts, in characters of the whole file
        self.bad: list[int] = []  # positions of bytes that are not UTF-8, in characters of the file
        self._pending = b""  # the start of a character split by the chunk's end

    def more(self) -> bool:
        """Append the next chunk; False once the file is read."""
        if self.eof:
            return False
        chunk = self.handle.read(_CHUNK)
        self.eof = not chunk
        data = self._pending + chunk
        try:
            text, used = codecs.utf_8_decode(data, "strict", self.eof)
        except UnicodeDecodeError:
            text, used = codecs.utf_8_decode(data, "surrogateescape", self.eof)
            base = self.offset + len(self.text)
            self.bad += [base + m.start() for m in _BAD_BYTE.finditer(text)]
        self._pending = data[used:]
        self.text += text
        return not self.eof

    def drop(self, pos: int) -> int:
        """Forget ``text[:pos]``; returns the new index of ``pos`` (0)."""
        self.text = self.text[pos:]
        self.offset += pos
        del self.bad[: bisect.bisect_left(self.bad, self.offset)]
        return 0

    def skip_space(self, pos: int) -> int:
        """The first non-space index at or after ``pos``, reading on as needed; len(text) at the end."""
        while True:
            pos = _SPACE.match(self.text, pos).end()
            if pos < len(self.text) or not self.more():
                return pos

    def bad_byte_in(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.bad, self.offset + start)
        return i < len(self.bad) and self.bad[i] < self.offset + end


def array_records(handle: BinaryIO, path: Path) -> Iterator[Record | Broken]:
    """The items of the JSON array that starts at ``handle``'s position (spaces, then ``[``)."""
    window = _Window(handle)
    pos = window.skip_space(0) + 1
    index = 0
    while True:
        if pos > _CHUNK:
            pos = window.drop(pos)
        pos = window.skip_space(pos)
        if pos >= len(window.text):
            yield Broken(
                "corrupt_json",
                f"{path}: the file ends inside the JSON array, after {index} items (all read); "
                "re-download it if it was cut short",
                f"item{index}+",
            )
            return
        if window.text[pos] == "]":
            return
        missing_comma = index > 0 and window.text[pos] != ","
        if index > 0 and not missing_comma:
            pos = window.skip_space(pos + 1)
        where, tag = f"{path} item {index}", f"item{index}"
        item, pos = _read_item(window, pos, where, tag, index)
        if item is None:
            yield Broken(
                "corrupt_json",
                f"{path}: the file ends inside item {index}; the {index} items before it were read — "
                "re-download it if it was cut short",
                f"item{index}+",
            )
            return
        if missing_comma and isinstance(item, Record):
            item = _broken("corrupt_json", where, tag, f"no ',' between it and item {index - 1}")
        yield item
        index += 1


def _read_item(
    window: _Window, pos: int, where: str, tag: str, index: int
) -> tuple[Record | Broken | None, int]:
    """The item at ``pos`` and the index just past it; None when the file ends inside it."""
    while True:
        text = window.text
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError) as err:
            scanner = _Scanner()
            end = scanner.feed(text, pos)
            if end is not None:
                return _unparsable(err, where, tag), max(end, pos + 1)
            if window.eof:
                return None, len(text)
            if len(text) - pos <= MAX_RECORD_BYTES:
                window.more()  # the item goes on past the window: read on, then parse it again
                continue
            end = _skip_rest(window, scanner)
            return (None, 0) if end is None else (_broken("record_too_large", where, tag), end)
        if end == len(text) and not window.eof:
            window.more()  # a number cut by the window's end parses as a shorter number
            continue
        if end - pos > MAX_RECORD_BYTES:
            return _broken("record_too_large", where, tag), end
        if window.bad_byte_in(pos, end):
            return _broken("non_utf8", where, tag, "re-encode the file as UTF-8"), end
        if _too_deep(text, pos, end):
            return _broken("too_deep", where, tag), end
        return Record(value, index, True), end


def _skip_rest(window: _Window, scanner: _Scanner) -> int | None:
    """Read on to the end of an item too large to keep, dropping its text as it goes.

    The scanner has followed the item to the window's end; returns the index just past the item
    in the window, or None when the file ends first.
    """
    while True:
        window.drop(len(window.text))
        window.more()
        if not window.text:
            return None
        end = scanner.feed(window.text, 0)
        if end is not None:
            return end
        if window.eof:
            return None
