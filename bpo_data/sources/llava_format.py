"""Read LLaVA-format conversation files into units, one record at a time.

The format shared by ShareGPT4V, LLaVAR and LLaVA-Instruct: records
``{"id", "image", "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}`` stored either
as one JSON array or as JSON Lines; the file's first non-space byte (``[`` or not) tells which.

Memory stays bounded whatever the file size: LLaVA-Instruct-150K is a ~230 MB JSON array, which
``json.load`` would turn into gigabytes of Python objects, so arrays are streamed with ``ijson``
(yajl2_c backend) and records are yielded one at a time — never the whole list. JSONL is read
line by line. The only state kept across records is the set of ids already seen.

Bad input never stops a run: a broken line, a record without image or answer, an image path that
escapes the root… each becomes a ``Reject`` naming the file, the record and the fix, and reading
goes on. A JSON array that breaks mid-way cannot be resynchronised, so it yields one reject for
the rest of that file. Image files are not opened here (too slow over 230k records); the pipeline
checks them with ``bpo_data.images``.

Ids: some sources use ints (stored as ``str(id)``); a record without an id gets its position,
``idx-<n>`` (0-based array index, or 0-based line number in JSONL, so both layouts of the same
data give the same keys). A multi-turn record gives one unit per human→gpt exchange, keyed
``<source>/<record_id>/<turn>``, with the earlier exchanges as context; ``turns`` keeps the first
exchange, all of them, or one per record picked by a stable hash of (source, record id, seed).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import ijson

from bpo_data.hashing import stable_u64
from bpo_data.images import ImageError, check_image_path
from bpo_data.prompting import strip_image_marker
from bpo_data.recipe import SourceSpec
from bpo_data.schema import Reject, Turn, Unit

Style = Literal["description", "qa"]
_HUMAN = {"human", "user"}
_GPT = {"gpt", "assistant"}
_WHITESPACE = b" \t\r\n"
_BOM = codecs.BOM_UTF8


@dataclass(frozen=True)
class FormatFacts:
    """What differs between LLaVA-format sources; everything else is read the same way."""

    label: str
    style: Style  # the answer style when the recipe does not set one
    image_layout: str  # how image paths relate to the image root, quoted in errors
    # "reject": a repeated id is a duplicate record. "number": ids name the *image*, and several
    # records about one image share it, so the 2nd, 3rd… become "<id>~1", "<id>~2" (file order).
    repeated_ids: Literal["reject", "number"] = "reject"


LLAVA = FormatFacts(
    label="LLaVA-format",
    style="qa",
    image_layout="image paths are relative to the image root, with whatever sub-folders the data uses",
)


@dataclass(frozen=True)
class _Record:
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
class _Broken:
    reason: str
    detail: str
    tag: str


class _Utf8Checked:
    """A binary reader that fails with UnicodeDecodeError at the first non-UTF-8 byte.

    yajl reports bad bytes only inside strings and with a vague message; checking here gives an
    exact offset and a distinct reason (``non_utf8``) for arrays. The valid bytes before the bad
    one are passed on first, so every complete record before it is still yielded.
    """

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._error: UnicodeDecodeError | None = None
        self.offset = raw.tell()

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        if size == 0:
            return b""
        chunk = self._raw.read(size)
        pending = len(self._decoder.getstate()[0])  # bytes of a split character held from the last chunk
        try:
            self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            err.start += self.offset - pending
            self._error = err
            chunk = chunk[: max(0, err.start - self.offset)]
            if not chunk:
                raise err from None
        self.offset += len(chunk)
        return chunk


def _first_byte(handle: BinaryIO) -> bytes:
    """The first non-space byte, leaving ``handle`` positioned just after any UTF-8 BOM."""
    head = handle.read(len(_BOM))
    handle.seek(len(_BOM) if head == _BOM else 0)
    start = handle.tell()
    while True:
        block = handle.read(4096)
        stripped = block.lstrip(_WHITESPACE)
        if stripped or not block:
            handle.seek(start)
            return stripped[:1]


def _array_records(handle: BinaryIO, path: Path) -> Iterator[_Record | _Broken]:
    checked = _Utf8Checked(handle)
    count = 0
    try:
        for value in ijson.items(checked, "item", use_float=True):
            yield _Record(value, count, True)
            count += 1
    except UnicodeDecodeError as err:
        yield _Broken(
            "non_utf8",
            f"{path}: byte offset {err.start} is not UTF-8 ({err.reason}), inside or after item {count}; "
            f"the {count} items before it were read and the rest of the file was skipped — "
            "re-encode the file as UTF-8",
            f"item{count}+",
        )
    except ijson.JSONError as err:
        message = str(err).strip().splitlines()[0]
        yield _Broken(
            "corrupt_json",
            f"{path}: the JSON array breaks inside or after item {count} ({message}); the {count} items "
            "before it were read and the rest of the file was skipped — re-download or repair the file",
            f"item{count}+",
        )


def _jsonl_records(handle: BinaryIO, path: Path) -> Iterator[_Record | _Broken]:
    for index, raw in enumerate(handle):
        line = index + 1
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield _Broken(
                "non_utf8",
                f"{path} line {line}: byte {err.start} is not UTF-8 ({err.reason}); "
                "re-encode the file as UTF-8 or delete the line",
                f"line{line}",
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            yield _Broken(
                "corrupt_json",
                f"{path} line {line}: not valid JSON ({err.msg} at column {err.colno}); "
                "fix or delete the line — the rest of the file is read as usual",
                f"line{line}",
            )
            continue
        yield _Record(value, index, False)


def _iter_records(path: Path) -> Iterator[_Record | _Broken]:
    """The file's records in order, JSON array or JSONL, with breakage reported in place."""
    with open(path, "rb") as handle:
        reader = _array_records if _first_byte(handle) == b"[" else _jsonl_records
        yield from reader(handle, path)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


@dataclass(frozen=True)
class _Exchange:
    question: str
    answer: str
    problem: tuple[str, str] | None = None  # (reason, detail) when this turn cannot be a unit


def _exchanges(conversations: list[Any]) -> list[_Exchange]:
    """Pair human questions with gpt answers; a structural break ends the record there."""
    out: list[_Exchange] = []
    i = 0
    while i < len(conversations):
        message = conversations[i]
        role = message.get("from") if isinstance(message, dict) else None
        if role not in _HUMAN:
            out.append(
                _Exchange(
                    "",
                    "",
                    (
                        "bad_turn_order",
                        f"message {i} is from {role!r} where a human question was expected; "
                        "conversations must alternate human, gpt — fix the record",
                    ),
                )
            )
            return out
        question = strip_image_marker(_text(message.get("value")))
        reply = conversations[i + 1] if i + 1 < len(conversations) else None
        if not (isinstance(reply, dict) and reply.get("from") in _GPT):
            out.append(
                _Exchange(
                    question,
                    "",
                    (
                        "no_gpt_turn",
                        f"human message {i} has no gpt answer after it; "
                        "earlier turns were kept — complete or drop the record",
                    ),
                )
            )
            return out
        answer = _text(reply.get("value")).strip()
        problem = None
        if not question:
            problem = ("empty_question", f"turn {len(out)} has an empty question; fix the record")
        elif not answer:
            problem = ("empty_answer", f"turn {len(out)} has an empty gpt answer; fix the record")
        out.append(_Exchange(question, answer, problem))
        i += 2
    return out


def _chosen_turns(spec: SourceSpec, record_id: str, count: int, seed: int) -> Iterable[int]:
    if spec.turns == "all":
        return range(count)
    if spec.turns == "random":
        return (stable_u64(f"{spec.name}/{record_id}", seed, "turn") % count,)
    return (0,)


def _record_id(raw_id: Any, position: int) -> str:
    if isinstance(raw_id, str) and raw_id.strip():
        return raw_id
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        return str(raw_id)
    return f"idx-{position}"


def _image_path(image: Any) -> str | None:
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    return image if isinstance(image, str) and image.strip() else None


def _where(path: Path, record: _Record, record_id: str) -> str:
    return f"{path} {record.where} (id {record_id})"


def _records_to_units(
    records: Iterable[_Record | _Broken],
    spec: SourceSpec,
    facts: FormatFacts,
    *,
    seed: int,
    path: Path,
    image_root: str,
    style: Style,
) -> Iterator[Unit | Reject]:
    """Units (and rejects) from parsed records; see the module docstring for the rules."""
    seen: set[str] = set()
    repeats: dict[str, int] = {}

    def reject(key: str, reason: str, detail: str) -> Reject:
        return Reject(key=key, source=spec.name, reason=reason, detail=detail, file=str(path))

    for record in records:
        if isinstance(record, _Broken):
            yield reject(f"{spec.name}/@{record.tag}", record.reason, record.detail)
            continue
        value = record.value
        if not isinstance(value, dict):
            yield reject(
                f"{spec.name}/@{record.tag}",
                "corrupt_json",
                f"{path} {record.where}: a {type(value).__name__}, not a record object; fix or remove it",
            )
            continue
        record_id = _record_id(value.get("id"), record.position)
        if record_id in seen:
            if facts.repeated_ids == "reject":
                yield reject(
                    f"{spec.name}/@{record.tag}",
                    "duplicate_id",
                    f"{_where(path, record, record_id)}: id already used by an earlier record of this "
                    "source; only the first is kept — give the record a unique id if it is wanted",
                )
                continue
            base = record_id
            while record_id in seen:
                repeats[base] = repeats.get(base, 0) + 1
                record_id = f"{base}~{repeats[base]}"
        seen.add(record_id)
        record_key = f"{spec.name}/{record_id}"

        image = _image_path(value.get("image"))
        if image is None:
            yield reject(
                record_key,
                "no_image",
                f"{_where(path, record, record_id)}: no usable 'image' (a text-only or multi-image record); "
                "a preference pair needs exactly one image, so it is skipped",
            )
            continue
        try:
            check_image_path(image_root, image)
        except ImageError as err:
            yield reject(record_key, err.reason, f"{_where(path, record, record_id)}: {err.detail}")
            continue

        conversations = value.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            yield reject(
                record_key,
                "no_conversations",
                f"{_where(path, record, record_id)}: no 'conversations' list of human/gpt messages; "
                "fix or drop the record",
            )
            continue
        exchanges = _exchanges(conversations)
        for turn in _chosen_turns(spec, record_id, len(exchanges), seed):
            exchange = exchanges[turn]
            key = f"{record_key}/{turn}"
            if exchange.problem:
                reason, detail = exchange.problem
                yield reject(key, reason, f"{_where(path, record, record_id)}: {detail}")
                continue
            yield Unit(
                key=key,
                source=spec.name,
                record_id=record_id,
                turn=turn,
                image=image,
                image_root=image_root,
                question=exchange.question,
                answer=exchange.answer,
                context=tuple(Turn(e.question, e.answer) for e in exchanges[:turn]),
                style=style,
            )


def unit_style(spec: SourceSpec, facts: FormatFacts) -> Style:
    """The recipe's style when it sets one, else the format's own (captions vs. questions)."""
    return spec.style if "style" in spec.model_fields_set else facts.style


def read_source(
    spec: SourceSpec,
    facts: FormatFacts,
    *,
    seed: int,
    data: str | None = None,
    image_root: str | None = None,
) -> Iterator[Unit | Reject]:
    """Check the paths now (so a wrong flag fails at once), then stream the file's units."""
    data = data if data is not None else spec.data
    image_root = image_root if image_root is not None else spec.image_root
    if not data:
        raise ValueError(
            f"source {spec.name!r} ({facts.label}) has no data file: set its 'data' in the recipe "
            "or pass --data"
        )
    if not image_root:
        raise ValueError(
            f"source {spec.name!r} ({facts.label}) has no image root: set its 'image_root' in the recipe or "
            f"pass --image-root; {facts.image_layout}"
        )
    path = Path(data).expanduser()
    root = Path(image_root).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"source {spec.name!r}: data file {path} not found; check --data or the recipe"
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"source {spec.name!r}: image root {root} is not a folder; check --image-root or the recipe; "
            f"{facts.image_layout}"
        )
    return _records_to_units(
        _iter_records(path),
        spec,
        facts,
        seed=seed,
        path=path,
        image_root=str(root),
        style=unit_style(spec, facts),
    )


def read_units(
    spec: SourceSpec, *, seed: int, data: str | None = None, image_root: str | None = None
) -> Iterator[Unit | Reject]:
    """Any other LLaVA-format file (e.g. LLaVA-1.5's mix665k), with the generic facts."""
    return read_source(spec, LLAVA, seed=seed, data=data, image_root=image_root)
