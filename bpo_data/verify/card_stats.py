"""What the dataset card shows of the evidence: distributions by negative type, and their figure.

Export feeds every exported pair's evidence to ``EvidenceStats.add`` (bounded memory: fixed-width
histograms), saves ``to_dict()`` into ``export_stats.json`` and draws ``write_figure`` next to the
card (``evidence.png``), which the card embeds with ``![evidence](evidence.png)``. The figure needs
matplotlib (``bpo-data[train]``); without it the card keeps the numbers and says the figure is missing.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bpo_data.verify.evidence import Evidence

MARGIN_BIN = 0.01  # histogram bin of clip_chosen - clip_rejected
OVERLAP_BIN = 0.05


@dataclass
class EvidenceStats:
    """Histograms per negative type: CLIP margin, objects added, text overlap; and pairs unverified."""

    margin: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    objects_added: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    overlap: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    unverified: Counter = field(default_factory=Counter)
    clip_models: Counter = field(default_factory=Counter)

    def add(self, negative_type: str, evidence: Evidence | None) -> None:
        if evidence is None:
            self.unverified[negative_type] += 1
            return
        if evidence.clip_margin is not None:
            self.margin[negative_type][_bin(evidence.clip_margin, MARGIN_BIN)] += 1
            self.clip_models[evidence.clip_model] += 1
        self.objects_added[negative_type][len(evidence.objects_added or [])] += 1
        self.overlap[negative_type][_bin(evidence.text_overlap, OVERLAP_BIN)] += 1

    def to_dict(self) -> dict:
        def bins(hists: dict[str, Counter], width: float) -> dict:
            return {t: {round(b * width, 4): n for b, n in sorted(h.items())} for t, h in hists.items()}

        return {
            "clip_margin": bins(self.margin, MARGIN_BIN),
            "objects_added": {t: dict(sorted(h.items())) for t, h in self.objects_added.items()},
            "text_overlap": bins(self.overlap, OVERLAP_BIN),
            "unverified": dict(self.unverified),
            "clip_models": dict(self.clip_models),
        }


def _bin(value: float, width: float) -> int:
    """The bin of ``value``; rounded first so 0.30 - 0.25 lands in the 0.05 bin, not below it."""
    return math.floor(round(value / width, 6))


def write_figure(stats: EvidenceStats, path: str | Path) -> bool:
    """Three panels (CLIP margin, objects added, text overlap), one series per negative type.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = (
        ("clip_chosen − clip_rejected", stats.margin, MARGIN_BIN),
        ("objects added by the rejected answer", stats.objects_added, 1),
        ("text overlap of chosen and rejected", stats.overlap, OVERLAP_BIN),
    )
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for axis, (title, hists, width) in zip(axes, panels):
        for negative_type, hist in sorted(hists.items()):
            xs = sorted(hist)
            axis.step([x * width for x in xs], [hist[x] for x in xs], where="post", label=negative_type)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("pairs")
    axes[0].axvline(0.0, color="grey", linewidth=0.8)
    axes[1].legend()  # every verified pair has an objects-added count; not every one a CLIP margin
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
