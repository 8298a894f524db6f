"""Filter steps: drop pairs that carry too little signal, each drop a reject with its reason.

A filter looks at finished pairs only (rejects pass by) and turns the ones it refuses into
rejects named ``filter:<threshold>``, so the run summary and the card count them and nothing
disappears silently. Recipes list them under ``filters:``; the Python API takes any ``Filter``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bpo_data.pipeline.steps import Step, Work
from bpo_data.recipe import EVIDENCE_THRESHOLDS, FilterSpec
from bpo_data.schema import Pair
from bpo_data.text import overlap, words


class Filter(Step):
    """Subclass and implement ``refuse``: None keeps the pair, a (threshold, detail) drops it."""

    name = "filter"
    negative_type: str | None = None

    def refuse(self, pair: Pair) -> tuple[str, str] | None:
        raise NotImplementedError

    def run(self, items: Iterable[Work]) -> Iterator[Work]:
        for work in items:
            if work.pair is not None and self.negative_type in (None, work.kind):
                refused = self.refuse(work.pair)
                if refused is not None:
                    threshold, detail = refused
                    self.stats[f"dropped: {threshold}"] += 1
                    work.fail(f"filter:{threshold}", detail)
                else:
                    self.stats["kept"] += 1
            yield work


class ThresholdFilter(Filter):
    """A recipe's ``filters:`` entry: bounds on what is measured of each pair."""

    def __init__(self, spec: FilterSpec):
        super().__init__()
        self.spec = spec
        self.negative_type = spec.negative_type
        self.name = "filter " + ", ".join(f"{k}={v}" for k, v in self.own_thresholds(spec).items())

    @staticmethod
    def own_thresholds(spec: FilterSpec) -> dict[str, float]:
        """The thresholds read here: words and overlap (evidence ones are ``bpo_data.verify``'s)."""
        return {name: value for name, value in spec.thresholds().items() if name not in EVIDENCE_THRESHOLDS}

    def refuse(self, pair: Pair) -> tuple[str, str] | None:
        return text_refusal(self.spec, pair.chosen, pair.rejected)


def text_refusal(spec: FilterSpec, chosen: str, rejected: str) -> tuple[str, str] | None:
    """The first word or overlap threshold of ``spec`` a pair's answers miss, or None (export uses it too)."""
    count = words(rejected)
    if spec.min_rejected_words is not None and count < spec.min_rejected_words:
        return (
            "min_rejected_words",
            f"the rejected answer has {count} words, fewer than {spec.min_rejected_words}",
        )
    if spec.max_rejected_words is not None and count > spec.max_rejected_words:
        return (
            "max_rejected_words",
            f"the rejected answer has {count} words, more than {spec.max_rejected_words}",
        )
    if spec.max_text_overlap is not None:
        similarity = overlap(chosen, rejected)
        if similarity > spec.max_text_overlap:
            return (
                "max_text_overlap",
                f"chosen and rejected are {similarity:.2f} alike (above {spec.max_text_overlap}): "
                "too little difference to learn from",
            )
    return None
