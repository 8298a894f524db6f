"""The evidence a pair carries that its rejected answer contradicts the image and its chosen does not.

One ``Evidence`` per pair, stored as the pair record's ``evidence`` mapping (by the pipeline's
``Verify`` step) or as a line ``{"key": …, "evidence": {…}}`` of ``verified-i-of-N.jsonl`` (by
``bpo-data verify DIR`` for shards made before). Published as seven flat columns (``evidence_columns``;
their types are in ``bpo_data.schema.features``), so a user filters the dataset with
``ds.filter(lambda r: r["clip_chosen"] - r["clip_rejected"] > 0.02)``; pairs never verified export
with nulls there.

- ``objects_added`` / ``objects_removed``: COCO objects the rejected answer names and the chosen
  does not, and the reverse (Object HalBench's reader);
- ``claims_added``: what the rejected answer states that neither the chosen answer nor the question
  does — objects, colours, counts, places, sizes, sign text (``bpo_data.verify.objects.claims_added``;
  none: the rejected answer rewords the truth);
- ``clip_chosen`` / ``clip_rejected``: mean sentence cosine of each answer with the image
  (``bpo_data.verify.clip``; null when both answers only deny things, which CLIP cannot read) and
  ``clip_model``, the model that measured them;
- ``text_overlap``: word-sequence similarity of the two answers (``bpo_data.text.overlap``, 1 = same),
  the measure the recipe's ``max_text_overlap`` filter uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bpo_data.text import overlap
from bpo_data.verify.clip import ClipScorer, ScoreRequest
from bpo_data.verify.objects import claims_added, object_diff

FIELDS = (
    "objects_added",
    "objects_removed",
    "claims_added",
    "clip_chosen",
    "clip_rejected",
    "clip_model",
    "text_overlap",
)


@dataclass
class Evidence:
    objects_added: list[str]
    objects_removed: list[str]
    clip_chosen: float | None
    clip_rejected: float | None
    clip_model: str | None
    text_overlap: float
    claims_added: list[str] | None = None  # None in evidence measured before the field existed

    @property
    def complete(self) -> bool:
        """Whether it holds every measure this version takes (older evidence lacks ``claims_added``)."""
        return self.claims_added is not None

    @property
    def clip_margin(self) -> float | None:
        """How much better the chosen answer matches the image than the rejected one."""
        if self.clip_chosen is None or self.clip_rejected is None:
            return None
        return self.clip_chosen - self.clip_rejected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(**{name: data.get(name) for name in FIELDS})


@dataclass(frozen=True)
class PairText:
    """What verification reads of a pair: its key, the question, both answers and where its image is."""

    key: str
    image_key: str
    question: str
    chosen: str
    rejected: str

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PairText:
        """From a pair as stored in a shard (or ``Pair.to_dict()``)."""
        question = next((m["content"] for m in reversed(record["prompt"]) if m["role"] == "user"), "")
        image_key = f"{record['image_root']}\0{record['image_path']}"
        return cls(record["key"], image_key, question, record["chosen"], record["rejected"])


def measure(
    pairs: Sequence[PairText], images: Sequence, scorer: ClipScorer | None, batch_size: int = 256
) -> list[Evidence]:
    """Evidence for each pair; ``images[i]`` is pair i's image (None: no CLIP scores for it)."""
    scored = [i for i, image in enumerate(images) if image is not None]
    scores: dict[int, tuple[float, float] | None] = {}
    if scorer is not None and scored:
        requests = [
            ScoreRequest(images[i], pairs[i].image_key, pairs[i].question, pairs[i].chosen, pairs[i].rejected)
            for i in scored
        ]
        scores = dict(zip(scored, scorer.score(requests, batch_size)))
    out = []
    for i, pair in enumerate(pairs):
        diff = object_diff(pair.chosen, pair.rejected)
        chosen, rejected = scores.get(i) or (None, None)
        out.append(
            Evidence(
                objects_added=diff.added,
                objects_removed=diff.removed,
                claims_added=claims_added(pair.chosen, pair.rejected, pair.question),
                clip_chosen=None if chosen is None else round(chosen, 6),
                clip_rejected=None if rejected is None else round(rejected, 6),
                clip_model=scorer.model_id if i in scores else None,
                text_overlap=round(overlap(pair.chosen, pair.rejected), 6),
            )
        )
    return out


def preferred(*found: Evidence | None) -> Evidence | None:
    """The first complete evidence of a pair, else the first there is (inline, then verified files)."""
    present = [evidence for evidence in found if evidence is not None]
    return next((evidence for evidence in present if evidence.complete), present[0] if present else None)


def evidence_columns(evidence: dict[str, Any] | None) -> dict[str, Any]:
    """A pair's evidence as export row columns; nulls for a pair never verified (not empty lists:
    "verified, no object added" and "not verified" must stay apart)."""
    if evidence is None:
        return dict.fromkeys(FIELDS)
    return {name: evidence.get(name) for name in FIELDS}
