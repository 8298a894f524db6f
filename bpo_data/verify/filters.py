"""Thresholds on a pair's evidence: which pairs to drop, each with the reason the rejects file keeps.

The same check serves the shard pipeline (``EvidenceFilter``, a ``Filter`` step after ``Verify``)
and the export (``refusal`` on a record's evidence). A recipe's ``filters:`` entry names thresholds
and, optionally, the negative type it applies to::

    filters:
      - {min_clip_margin: 0.02}                          # chosen matches the image better than rejected
      - {min_objects_added: 1, negative_type: weaken}    # a weakened answer must name a new object

A threshold on a measure the pair lacks (no CLIP score: its image could not be read) drops it too,
saying so: a filter that was asked for never lets an unmeasured pair through.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bpo_data.pipeline.filters import Filter
from bpo_data.schema import Pair
from bpo_data.verify.evidence import Evidence

# The filters measured in the miniature world (benchmarks/verify_world_precision.py, BENCHMARKS.md):
# drop a pair the verifier cannot measure (both answers only deny) or that it clearly finds the wrong
# way round (the rejected answer matches the picture better by more than 0.01). Calibrated on the
# world's eval_clean split with the world verifier; CLIP margins are on the scale of the model that
# measured them, so a recipe verified with another model should recalibrate.
DEFAULT_FILTERS: tuple[dict, ...] = ({"min_clip_margin": -0.01},)

# What each threshold reads, for the messages.
THRESHOLDS = {
    "min_clip_margin": "clip_chosen - clip_rejected",
    "min_clip_chosen": "clip_chosen",
    "max_clip_rejected": "clip_rejected",
    "min_objects_added": "objects_added",
}


class EvidenceThresholds(BaseModel):
    """The evidence fields a recipe filter may bound (to be added to ``recipe.FilterSpec``)."""

    model_config = ConfigDict(extra="ignore")

    negative_type: Literal["weaken", "inject"] | None = None
    min_clip_margin: float | None = Field(
        None, ge=-2.0, le=2.0, description="clip_chosen - clip_rejected at least this (cosines, -2..2)"
    )
    min_clip_chosen: float | None = Field(
        None, ge=-1.0, le=1.0, description="the chosen answer's CLIP cosine at least this (a wrong caption)"
    )
    max_clip_rejected: float | None = Field(None, ge=-1.0, le=1.0)
    min_objects_added: int | None = Field(
        None, ge=0, description="COCO objects the rejected answer names and the chosen does not"
    )

    def active(self) -> dict[str, float]:
        return {name: value for name in THRESHOLDS if (value := getattr(self, name)) is not None}


def needs_evidence(spec: Any) -> bool:
    """Whether a filter spec (``FilterSpec`` or ``EvidenceThresholds``) bounds any evidence field."""
    return any(getattr(spec, name, None) is not None for name in THRESHOLDS)


def refusal(evidence: Evidence | None, thresholds: EvidenceThresholds) -> tuple[str, str] | None:
    """None keeps the pair; (threshold, detail) drops it, naming the first threshold it misses."""
    for name, bound in thresholds.active().items():
        what = THRESHOLDS[name]
        value = _value(evidence, name)
        if value is None:
            return name, (
                f"no {what} to compare with {bound}: the pair was not verified, its image could not be "
                "read, or both answers only deny things, which CLIP cannot read"
            )
        if name == "min_objects_added" and value < bound:
            return (
                name,
                f"the rejected answer names {value} object(s) the chosen does not, fewer than {bound}",
            )
        if name.startswith("min_clip") and value < bound:
            return (
                name,
                f"{what} is {value:.4f}, below {bound}: the image does not favour the chosen answer enough",
            )
        if name == "max_clip_rejected" and value > bound:
            return (
                name,
                f"{what} is {value:.4f}, above {bound}: the rejected answer matches the image too well",
            )
    return None


def _value(evidence: Evidence | None, name: str) -> float | None:
    if evidence is None:
        return None
    if name == "min_clip_margin":
        return evidence.clip_margin
    if name == "min_objects_added":
        return len(evidence.objects_added) if evidence.objects_added is not None else None
    return getattr(evidence, THRESHOLDS[name])


class EvidenceFilter(Filter):
    """A recipe filter's evidence thresholds as a pipeline step (after ``Verify``, before the writer)."""

    def __init__(self, spec: Any):
        super().__init__()
        self.thresholds = EvidenceThresholds.model_validate(spec, from_attributes=True)
        self.negative_type = self.thresholds.negative_type
        self.name = "filter " + ", ".join(f"{k}={v}" for k, v in self.thresholds.active().items())

    def refuse(self, pair: Pair) -> tuple[str, str] | None:
        evidence = getattr(pair, "evidence", None)
        return refusal(Evidence.from_dict(evidence) if evidence else None, self.thresholds)
