"""The records that cross module boundaries, and the published dataset's columns.

A unit of work, a finished pair and a reject are plain data (JSON-serialisable through
``to_dict``) so that shards can be written, read back and merged by key without knowing which
engine produced them. ``features()`` is the published schema (DESIGN.md) and ``ERROR_TYPES`` the
one vocabulary of the ``error_types`` column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

NegativeType = Literal["weaken", "inject"]
NEGATIVE_TYPES: tuple[NegativeType, ...] = ("weaken", "inject")

# What an injected rejected answer got wrong, as *applied* (not as asked for): the rules injector
# records the edits it made, an LLM rewrite is read off the difference to the ground truth.
ERROR_TYPES: dict[str, str] = {
    "object": "an object added, removed or replaced by another",
    "attribute": "a colour, size, shape, material or other property changed",
    "count": "how many of something there are changed",
    "position": "where something is, or how things are placed relative to each other, changed",
    "text_number": "text or a number written in the image (a sign, a price, a time) changed",
    "other": "a change none of the types above describes",
}


@dataclass(frozen=True)
class Turn:
    """One earlier exchange kept as context for a later question."""

    question: str
    answer: str


@dataclass(frozen=True)
class Unit:
    """One (record, turn) of a source: what a pair is built from.

    ``key`` is ``source/record_id/turn`` and is stable across runs, shard counts and machines;
    every sampling and resume decision is made on it.
    """

    key: str
    source: str
    record_id: str
    turn: int
    image: str
    image_root: str
    question: str
    answer: str
    context: tuple[Turn, ...] = ()
    style: Literal["description", "qa"] = "qa"

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages (earlier turns, then the question); no image marker."""
        out: list[dict[str, str]] = []
        for turn in self.context:
            out.append({"role": "user", "content": turn.question})
            out.append({"role": "assistant", "content": turn.answer})
        out.append({"role": "user", "content": self.question})
        return out


@dataclass
class Pair:
    """A finished preference pair as stored in a shard (one JSON line)."""

    key: str
    unit_key: str
    source: str
    record_id: str
    turn: int
    negative_type: NegativeType
    image_path: str
    image_root: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    generator: str
    noise_step: int | None = None
    noise_space: str | None = None
    error_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_unit(
        cls,
        unit: Unit,
        negative_type: NegativeType,
        rejected: str,
        generator: str,
        *,
        noise_step: int | None = None,
        noise_space: str | None = None,
        error_types: list[str] | None = None,
    ) -> Pair:
        return cls(
            key=pair_key(unit.key, negative_type),
            unit_key=unit.key,
            source=unit.source,
            record_id=unit.record_id,
            turn=unit.turn,
            negative_type=negative_type,
            image_path=unit.image,
            image_root=unit.image_root,
            prompt=unit.messages(),
            chosen=unit.answer,
            rejected=rejected,
            generator=generator,
            noise_step=noise_step,
            noise_space=noise_space,
            error_types=list(error_types or []),
        )


@dataclass
class Reject:
    """A unit (or a record that never became a unit) that cannot become a pair, and why.

    ``reason`` is a short machine-readable code (``missing_image``, ``invalid_rewrite:too_short``…)
    counted in the run summary; ``detail`` is the sentence a person reads.
    """

    key: str
    source: str
    reason: str
    detail: str
    file: str = ""
    negative_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_key(unit_key: str, negative_type: str) -> str:
    """The key a pair (or its reject) is stored under: one unit may yield one pair per type."""
    return f"{unit_key}#{negative_type}"


def unit_key_of(key: str) -> str:
    """The unit a pair key belongs to (the inverse of ``pair_key``; a record id may contain ``#``)."""
    return key.rsplit("#", 1)[0]


def features():
    """The published columns (DESIGN.md): TRL's first, then provenance.

    A function, not a constant, so that importing the schema does not import ``datasets``.
    """
    from datasets import Features, Image, Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    return Features(
        {
            "images": [Image()],
            "prompt": messages,
            "chosen": messages,
            "rejected": messages,
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
            # The evidence (bpo_data.verify.evidence): null for a pair that was never verified.
            "objects_added": [Value("string")],
            "objects_removed": [Value("string")],
            "claims_added": [Value("string")],
            "clip_chosen": Value("float32"),
            "clip_rejected": Value("float32"),
            "clip_model": Value("string"),
            "text_overlap": Value("float32"),
        }
    )
