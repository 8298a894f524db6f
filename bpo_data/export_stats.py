"""What an export wrote and left out: the numbers the card shows and ``export_stats.json`` keeps,
and the composition figure drawn from them."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
    test_size: float = 0.0  # share of the images held out as the test split
    test_pairs: int = 0
    error_types: dict[str, int] = field(default_factory=dict)  # injected error kinds, most common first
    # negative type → chosen/rejected → words → pairs: the composition figure's length panel
    length_histograms: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)
    composition_figure: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_composition_figure(stats: ExportStats, path: str | Path) -> bool:
    """Three panels: pairs by source × negative type, answer lengths (chosen vs rejected), error types.

    Returns False (and writes nothing) when matplotlib is not installed; the card then says so.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (by_source, lengths, errors) = plt.subplots(1, 3, figsize=(14, 3.6))
    sources = sorted(stats.counts)
    types = sorted({t for per in stats.counts.values() for t in per})
    bottom = [0] * len(sources)
    for negative_type in types:
        heights = [stats.counts[s].get(negative_type, 0) for s in sources]
        by_source.bar(sources, heights, bottom=bottom, label=negative_type)
        bottom = [b + h for b, h in zip(bottom, heights)]
    by_source.set_title("pairs by source and negative type", fontsize=10)
    by_source.set_ylabel("pairs")
    by_source.legend()
    every_length = [int(n) for per in stats.length_histograms.values() for h in per.values() for n in h]
    edges = _length_bins(every_length)
    for negative_type, per_text in sorted(stats.length_histograms.items()):
        for text, style in (("chosen", "-"), ("rejected", "--")):
            hist = {int(n): count for n, count in per_text.get(text, {}).items()}
            lengths.hist(
                list(hist), bins=edges, weights=list(hist.values()), histtype="step", linestyle=style,
                label=f"{negative_type} {text}",
            )  # fmt: skip
    lengths.set_title("answer length", fontsize=10)
    lengths.set_xlabel("words")
    lengths.set_ylabel("pairs")
    lengths.legend(fontsize=8)
    if stats.error_types:
        names = list(stats.error_types)
        errors.barh(names, [stats.error_types[n] for n in names])
        errors.invert_yaxis()
    else:
        errors.text(0.5, 0.5, "no injected error types", ha="center", va="center", transform=errors.transAxes)
    errors.set_title("injected error types", fontsize=10)
    errors.set_xlabel("pairs")
    for axis in (by_source.yaxis, lengths.xaxis, lengths.yaxis, errors.xaxis):
        axis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _length_bins(lengths: list[int], most: int = 30) -> list[float]:
    """Bin edges for word counts: one bin per length when few, else ``most`` equal integer-wide bins."""
    low, high = (min(lengths), max(lengths)) if lengths else (0, 1)
    width = max(1, math.ceil((high - low + 1) / most))
    return [low - 0.5 + width * i for i in range(math.ceil((high - low + 1) / width) + 1)]
