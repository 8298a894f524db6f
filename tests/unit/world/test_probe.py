"""Figure 5's probe on a few scenes: the clean view has no divergence, noise does, and the outputs agree."""

from __future__ import annotations

import json

from bpo_data.world.make import read_scenes
from bpo_data.world.probe import FIGURE_FILE, JSON_FILE, TABLE_FILE, probe


def test_probe_measures_each_space_and_step(small_world, smoke_model_dir, tmp_path):
    world, _ = small_world
    report = probe(smoke_model_dir, world, tmp_path, scenes=2, steps=(0, 900), log=lambda _: None)

    rows = {(r["space"], r["step"]): r for r in report["rows"]}
    assert set(rows) == {("pixel", 0), ("pixel", 900), ("features", 0), ("features", 900)}
    # step 0 is the clean image itself; step 900 keeps ~37 % of the signal and moves the next-token law
    assert rows["pixel", 0]["kl"] == 0.0 and rows["features", 0]["kl"] == 0.0
    assert rows["pixel", 900]["kl"] > 1e-4 and rows["features", 900]["kl"] > 1e-4
    assert rows["pixel", 0]["signal"] == 1.0 and 0.3 < rows["pixel", 900]["signal"] < 0.4
    # the rates are read from the descriptions of prior-violating held-out scenes
    assert report["scenes"] == [s.id for s in read_scenes(world / "eval_violating")[:2]]
    for row in rows.values():
        assert row["partner_rate"] is None or 0.0 <= row["partner_rate"] <= 100.0

    table = (tmp_path / TABLE_FILE).read_text()
    assert len([line for line in table.splitlines() if line.startswith(("| pixel", "| features"))]) == 4
    assert set(report["verdict"]) == {"pixel", "features"}
    assert json.loads((tmp_path / JSON_FILE).read_text())["rows"] == report["rows"]
    assert (tmp_path / FIGURE_FILE).read_bytes().startswith(b"\x89PNG")


def test_the_cli_default_steps_are_the_probes():
    from bpo_data.world.probe import DEFAULT_STEPS
    from bpo_data.world.probe_cli import STEPS_FLAG_DEFAULT

    assert STEPS_FLAG_DEFAULT == ",".join(map(str, DEFAULT_STEPS))
