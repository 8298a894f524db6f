"""Thresholds on a pair's evidence: which pairs to drop, each with the reason the rejects file keeps.

The same check serves the shard pipeline (``EvidenceFilter``, a ``Filter`` step after ``Verify``)
and the export (``refusal`` on a record's evidence). A recipe's ``filters:`` entry names thresholds
and, optionally, the negative type it applies to::

    filters:
      - {min_clip_margin: 0.02}                          # chosen matches the image better than rejected
      - {min_objects_added: 1, negative_type: weaken}    # a weakened answer must name a new object
      - {min_claims_added: 1}                            # the rejected answer must state something new

A threshold on a measure the pair lacks (no CLIP score: its image could not be read) drops it too,
saying so: a filter that was asked for never lets an unmeasured pair through.
"""

from __future__ import annotations

from bpo_data.pipeline.filters import Filter
from bpo_data.recipe import EVIDENCE_THRESHOLDS, FilterSpec
from bpo_data.schema import Pair
from bpo_data.verify.evidence import Evidence

# The filters measured in the miniature world (benchmarks/verify_world_precision.py, BENCHMARKS.md):
# drop a pair whose rejected answer states nothing the chosen answer and the question do not (it
# rewords the truth, or only denies). It needs no CLIP model and keeps 99 % precision on weakened and
# injected negatives; a CLIP margin on top bought precision only at a third of the recall there.
DEFAULT_FILTERS: tuple[dict, ...] = ({"min_claims_added": 1},)


def evidence_thresholds(spec: FilterSpec) -> dict[str, float]:
    """The thresholds of a recipe filter that read evidence (the others are ``ThresholdFilter``'s)."""
    return {name: value for name, value in spec.thresholds().items() if name in EVIDENCE_THRESHOLDS}


def needs_evidence(spec: FilterSpec) -> bool:
    """Whether a recipe filter bounds any evidence field."""
    return bool(evidence_thresholds(spec))


def refusal(evidence: Evidence | None, spec: FilterSpec) -> tuple[str, str] | None:
    """None keeps the pair; (threshold, detail) drops it, naming the first threshold it misses."""
    for name, bound in evidence_thresholds(spec).items():
        what = EVIDENCE_THRESHOLDS[name]
        value = _value(evidence, name)
        if value is None and name == "min_claims_added" and evidence is not None:
            return name, (
                "the pair's evidence was measured before claims_added existed: run `bpo-data verify "
                "DIR` on its folder again to add it"
            )
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
        if name == "min_claims_added" and value < bound:
            return (
                name,
                f"the rejected answer states {value} thing(s) the chosen answer and the question do not, "
                f"fewer than {bound}: it rewords the truth",
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
    if name in ("min_objects_added", "min_claims_added"):
        listed = getattr(evidence, EVIDENCE_THRESHOLDS[name])
        return len(listed) if listed is not None else None
    return getattr(evidence, EVIDENCE_THRESHOLDS[name])


class EvidenceFilter(Filter):
    """A recipe filter's evidence thresholds as a pipeline step (after ``Verify``, before the writer)."""

    def __init__(self, spec: FilterSpec):
        super().__init__()
        self.spec = spec
        self.negative_type = spec.negative_type
        self.name = "filter " + ", ".join(f"{k}={v}" for k, v in evidence_thresholds(spec).items())

    def refuse(self, pair: Pair) -> tuple[str, str] | None:
        evidence = getattr(pair, "evidence", None)
        return refusal(Evidence.from_dict(evidence) if evidence else None, self.spec)
