"""The card's evidence distributions: counted per negative type, unverified pairs kept apart."""

from __future__ import annotations

import pytest

from bpo_data.verify.card_stats import EvidenceStats, write_figure
from bpo_data.verify.evidence import Evidence


def test_distributions_by_negative_type_and_the_figure(tmp_path):
    stats = EvidenceStats()
    stats.add("inject", Evidence(["cat"], [], 0.30, 0.25, "m", 0.92))
    stats.add("inject", Evidence([], [], 0.30, 0.305, "m", 0.95))
    stats.add("weaken", Evidence(["cat", "dog"], ["cup"], 0.3, 0.1, "m", 0.2))
    stats.add("weaken", None)
    data = stats.to_dict()
    assert data["clip_margin"]["inject"] == {-0.01: 1, 0.05: 1}
    assert data["objects_added"] == {"inject": {0: 1, 1: 1}, "weaken": {2: 1}}
    assert data["unverified"] == {"weaken": 1} and data["clip_models"] == {"m": 3}
    pytest.importorskip("matplotlib")
    assert write_figure(stats, tmp_path / "evidence.png")
    assert (tmp_path / "evidence.png").stat().st_size > 1000
