"""What an export wrote and left out: the numbers the card shows and ``export_stats.json`` keeps."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LengthCounter:
    """Exact mean/median/p95 of word counts with bounded memory: lengths are few distinct integers."""

    histogram: Counter = field(default_factory=Counter)

    def add(self, words: int) -> None:
        self.histogram[words] += 1

    def summary(self) -> dict[str, float]:
        n = sum(self.histogram.values())
        if n == 0:
            return {"mean": 0.0, "median": 0.0, "p95": 0.0}
        total = sum(length * count for length, count in self.histogram.items())
        return {"mean": round(total / n, 1), "median": self._quantile(0.5, n), "p95": self._quantile(0.95, n)}

    def _quantile(self, q: float, n: int) -> float:
        """Nearest-rank quantile: the smallest length whose cumulative count reaches q·n."""
        rank = max(1, math.ceil(round(q * n, 9)))  # round first: 0.95 * 20 must be rank 19, not 20
        seen = 0
        for length in sorted(self.histogram):
            seen += self.histogram[length]
            if seen >= rank:
                return float(length)
        return float(max(self.histogram))


@dataclass
class ExportStats:
    """What the export wrote and what it left out, with the reason; saved as ``export_stats.json``."""

    version: str
    pairs: int = 0
    duplicates_dropped: int = 0
    torn_lines: int = 0
    image_errors: dict[str, int] = field(default_factory=dict)
    generation_rejects: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    generators: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)  # dropped by export filters, by threshold
    evidence: dict[str, Any] = field(default_factory=dict)  # bpo_data.verify.card_stats.EvidenceStats
    evidence_figure: bool = False
    smoke: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
