"""Read LLaVA-format conversation files into units, one record at a time.

The format shared by ShareGPT4V, LLaVAR and LLaVA-Instruct: records
``{"id", "image", "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}`` stored either
as one JSON array or as JSON Lines; the file's first non-space byte (``[`` or not) tells which.
``json_records`` reads either layout one record at a time in bounded memory and depth, so the
230 MB LLaVA-Instruct-150K array never becomes a list of Python objects.

Bad input never stops a run: a broken record, a record without image or answer, an image path
that escapes the root, text that cannot be written as UTF-8, a prompt past the recipe's bound…
each becomes a ``Reject`` naming the file, the record and the fix, and reading goes on. Image
files are not opened here (too slow over 230k records); the pipeline checks them with
``bpo_data.images``.

Ids: some sources use ints (stored as ``str(id)``); a record without an id gets its position,
``idx-<n>`` (0-based array index, or 0-based line number in JSONL, so both layouts of the same
data give the same keys). An explicit id of that shape gets a ``=`` in front (``=idx-1``, and
``==idx-1`` for ``=idx-1``…), so it never meets a position's id. A record identical to an
earlier one (same id, image and conversation) is a ``duplicate_record``: it is made once.

A multi-turn record gives one unit per human→gpt exchange, keyed ``<source>/<record_id>/<turn>``,
with the earlier exchanges as context; ``turns`` keeps the first exchange, all of them, or one per
record picked by a stable hash of (source, record id, seed). The ``<image>`` placeholder is removed
from questions and answers alike.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from bpo_data.hashing import stable_u64
from bpo_data.images import ImageError, check_image_path
from bpo_data.recipe import SourceSpec, TextSpec
from bpo_data.schema import Reject, Turn, Unit
from bpo_data.sources.json_records import Broken, Record, array_records, jsonl_records
from bpo_data.text import has_lone_surrogate, is_blank, remove_image_marker

Style = Literal["description", "qa"]
_HUMAN = {"human", "user"}
_GPT = {"gpt", "assistant"}
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
_FALLBACK_SHAPE = re.compile(r"=*idx-\d+")


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


def _iter_records(path: Path) -> Iterator[Record | Broken]:
    """The file's records in order, JSON array or JSONL, with breakage reported in place."""
    with open(path, "rb") as handle:
        reader = array_records if _first_byte(handle) == b"[" else jsonl_records
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
            problem = (
                "bad_turn_order",
                f"message {i} is from {role!r} where a human question was expected; "
                "conversations must alternate human, gpt — fix the record",
            )
            out.append(_Exchange("", "", problem))
            return out
        question = remove_image_marker(_text(message.get("value")))
        reply = conversations[i + 1] if i + 1 < len(conversations) else None
        if not (isinstance(reply, dict) and reply.get("from") in _GPT):
            problem = (
                "no_gpt_turn",
                f"human message {i} has no gpt answer after it; earlier turns were kept — complete or "
                "drop the record",
            )
            out.append(_Exchange(question, "", problem))
            return out
        answer = remove_image_marker(_text(reply.get("value")))
        problem = None
        if is_blank(question):
            problem = ("empty_question", f"turn {len(out)} has an empty question; fix the record")
        elif is_blank(answer):
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
    """The record's own id, or ``idx-<position>``; an own id of that shape is escaped with ``=``."""
    if isinstance(raw_id, str) and raw_id.strip():
        return "=" + raw_id if _FALLBACK_SHAPE.fullmatch(raw_id) else raw_id
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        return str(raw_id)
    return f"idx-{position}"


def _image_path(image: Any) -> str | None:
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    return image if isinstance(image, str) and image.strip() else None


def _content_digest(value: dict) -> int:
    """What makes two records the same record: their image and every message, in order."""
    parts = [_text(value.get("image"))]
    conversations = value.get("conversations")
    if isinstance(conversations, list):
        for message in conversations:
            if isinstance(message, dict):
                parts += [_text(message.get("from")), _text(message.get("value"))]
    text = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _digests_under(record_id: str, seen: dict[str, int]) -> Iterator[int]:
    """The contents of the records given ``record_id`` so far: itself, then its ``~1``, ``~2``… repeats."""
    yield seen[record_id]
    repeat = 1
    while (name := f"{record_id}~{repeat}") in seen:
        yield seen[name]
        repeat += 1


def _has_bad_text(image: str, exchanges: list[_Exchange]) -> bool:
    strings = [image] + [t for e in exchanges for t in (e.question, e.answer)]
    return any(has_lone_surrogate(text) for text in strings)


def _where(path: Path, record: Record, record_id: str) -> str:
    return f"{path} {record.where} (id {record_id!r})"


@dataclass
class _Reader:
    """Turns one source file's parsed records into units and rejects (the module docstring's rules)."""

    spec: SourceSpec
    facts: FormatFacts
    seed: int
    path: Path
    image_root: str
    style: Style
    limits: TextSpec

    def reject(self, key: str, reason: str, detail: str) -> Reject:
        return Reject(key=key, source=self.spec.name, reason=reason, detail=detail, file=str(self.path))

    def units(self, records: Iterable[Record | Broken]) -> Iterator[Unit | Reject]:
        name = self.spec.name
        seen: dict[str, int] = {}  # ids given so far → digest of their record's content
        repeats: dict[str, int] = {}
        for record in records:
            if isinstance(record, Broken):
                yield self.reject(f"{name}/@{record.tag}", record.reason, record.detail)
                continue
            value = record.value
            if not isinstance(value, dict):
                yield self.reject(
                    f"{name}/@{record.tag}",
                    "corrupt_json",
                    f"{self.path} {record.where}: a {type(value).__name__}, not a record object; "
                    "fix or remove it",
                )
                continue
            record_id = _record_id(value.get("id"), record.position)
            if has_lone_surrogate(record_id):
                yield self.reject(
                    f"{name}/@{record.tag}",
                    "non_utf8",
                    f"{self.path} {record.where}: its id {record_id!r} holds a lone surrogate escape "
                    "(\\udXXX), which is not a character; fix the id",
                )
                continue
            digest = _content_digest(value)
            if record_id in seen:
                where = _where(self.path, record, record_id)
                if digest in _digests_under(record_id, seen):
                    yield self.reject(
                        f"{name}/@{record.tag}",
                        "duplicate_record",
                        f"{where}: an exact copy of an earlier record (same id, image and conversation); "
                        "it is made once",
                    )
                    continue
                if self.facts.repeated_ids == "reject":
                    yield self.reject(
                        f"{name}/@{record.tag}",
                        "duplicate_id",
                        f"{where}: id already used by an earlier record of this source; only the first "
                        "is kept — give the record a unique id if it is wanted",
                    )
                    continue
                base = record_id
                while record_id in seen:
                    repeats[base] = repeats.get(base, 0) + 1
                    record_id = f"{base}~{repeats[base]}"
            seen[record_id] = digest
            yield from self.record_units(value, record, record_id)

    def record_units(self, value: dict, record: Record, record_id: str) -> Iterator[Unit | Reject]:
        """The units of one record that is not a duplicate, or the rejects saying why not."""
        record_key = f"{self.spec.name}/{record_id}"
        where = _where(self.path, record, record_id)
        image = _image_path(value.get("image"))
        if image is None:
            yield self.reject(
                record_key,
                "no_image",
                f"{where}: no usable 'image' (a text-only or multi-image record); "
                "a preference pair needs exactly one image, so it is skipped",
            )
            return
        try:
            check_image_path(self.image_root, image)
        except ImageError as err:
            yield self.reject(record_key, err.reason, f"{where}: {err.detail}")
            return
        conversations = value.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            yield self.reject(
                record_key,
                "no_conversations",
                f"{where}: no 'conversations' list of human/gpt messages; fix or drop the record",
            )
            return
        exchanges = _exchanges(conversations)
        if _has_bad_text(image, exchanges):
            yield self.reject(
                record_key,
                "non_utf8",
                f"{where}: its image path or a message holds a lone surrogate escape (\\udXXX), which is "
                "not a character and cannot be written as UTF-8; fix the record",
            )
            return
        starts = [0]  # characters of the turns before each turn, which its prompt repeats
        for exchange in exchanges:
            starts.append(starts[-1] + len(exchange.question) + len(exchange.answer))
        for turn in _chosen_turns(self.spec, record_id, len(exchanges), self.seed):
            exchange = exchanges[turn]
            key = f"{record_key}/{turn}"
            problem = exchange.problem or self.too_long(turn, starts[turn] + len(exchange.question), exchange)
            if problem:
                reason, detail = problem
                yield self.reject(key, reason, f"{where}: {detail}")
                continue
            yield Unit(
                key=key,
                source=self.spec.name,
                record_id=record_id,
                turn=turn,
                image=image,
                image_root=self.image_root,
                question=exchange.question,
                answer=exchange.answer,
                context=tuple(Turn(e.question, e.answer) for e in exchanges[:turn]),
                style=self.style,
            )

    def too_long(self, turn: int, prompt_chars: int, exchange: _Exchange) -> tuple[str, str] | None:
        limits = self.limits
        if prompt_chars > limits.max_prompt_chars:
            return (
                "prompt_too_long",
                f"turn {turn}'s prompt (the turns before it and its question) has {prompt_chars:,} "
                f"characters, over text.max_prompt_chars ({limits.max_prompt_chars:,}); raise the limit "
                "in the recipe if such prompts are wanted",
            )
        if len(exchange.answer) > limits.max_answer_chars:
            return (
                "answer_too_long",
                f"turn {turn}'s answer has {len(exchange.answer):,} characters, over "
                f"text.max_answer_chars ({limits.max_answer_chars:,}); raise the limit in the recipe if "
                "such answers are wanted",
            )
        return None


def unit_style(spec: SourceSpec, facts: FormatFacts) -> Style:
    """The recipe's style when it sets one, else the format's own (captions vs. questions)."""
    return spec.style if "style" in spec.model_fields_set else facts.style


def source_paths(
    spec: SourceSpec, facts: FormatFacts, data: str | None, image_root: str | None
) -> tuple[Path, Path]:
    """The data file and the image root (absolute, resolved), checked so that a wrong flag fails at once."""
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
    if path.is_dir():
        raise FileNotFoundError(
            f"source {spec.name!r}: --data {path} is a folder; give the annotation file in it "
            "(a JSON array or JSONL of LLaVA records)"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"source {spec.name!r}: data file {path} not found; check --data or the recipe"
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"source {spec.name!r}: image root {root} is not a folder; check --image-root or the recipe; "
            f"{facts.image_layout}"
        )
    return path.resolve(), root.resolve()


def read_source(
    spec: SourceSpec,
    facts: FormatFacts,
    *,
    seed: int,
    data: str | None = None,
    image_root: str | None = None,
    limits: TextSpec | None = None,
) -> Iterator[Unit | Reject]:
    """Check the paths now (so a wrong flag fails at once), then stream the file's units."""
    path, root = source_paths(spec, facts, data, image_root)
    reader = _Reader(spec, facts, seed, path, str(root), unit_style(spec, facts), limits or TextSpec())
    return reader.units(_iter_records(path))


def read_units(
    spec: SourceSpec,
    *,
    seed: int,
    data: str | None = None,
    image_root: str | None = None,
    limits: TextSpec | None = None,
) -> Iterator[Unit | Reject]:
    """Any other LLaVA-format file (e.g. LLaVA-1.5's mix665k), with the generic facts."""
    return read_source(spec, LLAVA, seed=seed, data=data, image_root=image_root, limits=limits)
