"""Figure 5's probe on a few scenes: the clean view has no divergence, noise does, and the outputs agree."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bpo_data.world.make import read_scenes
from bpo_data.world.probe import FIGURE_FILE, JSON_FILE, TABLE_FILE, Row, _mean_kl, probe, verdict


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

    table = (tmp_path / TABLE_FILE).read_text()
    assert len([line for line in table.splitlines() if line.startswith(("| pixel", "| features"))]) == 4
    assert json.loads((tmp_path / JSON_FILE).read_text())["scenes"] == report["scenes"]
    assert (tmp_path / FIGURE_FILE).read_bytes().startswith(b"\x89PNG")


def _row(space: str, step: int, rate: float | None, kl: float = 0.0) -> Row:
    return Row(space, step, 1.0, rate, None, kl)


def test_the_verdict_compares_the_largest_step_with_step_0_per_space():
    said = verdict(
        [
            _row("pixel", 900, 40.0, 0.05),
            _row("pixel", 0, 20.0),
            _row("pixel", 500, 60.0),  # a peak in between does not decide it
            _row("features", 0, 30.0),
            _row("features", 900, 30.0),
            _row("other", 0, None),
            _row("other", 900, 10.0),
        ]
    )
    assert said["pixel"].startswith("the prior grew with noise") and "(+20.0 points)" in said["pixel"]
    assert said["features"].startswith("the prior did not grow") and "(+0.0 points)" in said["features"]
    assert said["other"].startswith("not measurable")


def test_kl_is_zero_for_the_same_law_and_matches_the_closed_form():
    clean = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    noisy = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    expected = (0.0 + (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))) / 2
    assert _mean_kl([clean], [clean], [[1, 2]]) == 0.0
    assert _mean_kl([clean], [noisy], [[1, 2]]) == pytest.approx(expected)
    assert _mean_kl([clean, clean], [noisy, noisy], [[1, 2], []]) == pytest.approx(
        expected
    )  # no answer: skipped


def test_the_cli_default_steps_are_the_probes():
    from bpo_data.world.probe import DEFAULT_STEPS
    from bpo_data.world.probe_cli import STEPS_FLAG_DEFAULT

    assert STEPS_FLAG_DEFAULT == ",".join(map(str, DEFAULT_STEPS))


def test_bad_input_is_a_usage_error_and_a_failure_mid_run_is_not(
    small_world, smoke_model_dir, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from bpo_data.world import probe as probe_module
    from bpo_data.world.cli import world_app

    world, _ = small_world
    args = ["probe", "--world", str(world), "--out", str(tmp_path / "p"), "--scenes", "2"]
    args += ["--model", str(smoke_model_dir)]
    bad = CliRunner().invoke(world_app, [*args, "--space", "colour"])
    assert bad.exit_code == 2 and "unknown noise space ['colour']" in bad.output

    def broken(*_args, **_kwargs):  # a ValueError from deep inside a run is a bug to see, not bad usage
        raise ValueError("shapes do not match")

    monkeypatch.setattr(probe_module, "load_engine", broken)
    failed = CliRunner().invoke(world_app, args)
    assert failed.exit_code == 1 and isinstance(failed.exception, ValueError)
