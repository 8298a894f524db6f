"""Figure 7: equal-count intervals of logged steps with sample std or standard error of the mean, the reward
panel that shows DPO working when summed log-probs mislead, labels that match the bins used, integer steps."""

from __future__ import annotations

import csv

import pytest

from trainer_min.plot import draw_figure, interval_means


def test_interval_means_use_equal_count_intervals_with_std_or_sem():
    steps, values = [1, 2, 3, 4, 5, 6], [1.0, 3.0, 2.0, 4.0, 10.0, float("nan")]
    centres, means, stds = interval_means(steps, values, bins=2, error="std")
    assert centres == [1.5, 4.0] and means == [2.0, pytest.approx(16 / 3)]
    sample_std = (((10 / 3) ** 2 + (4 / 3) ** 2 + (14 / 3) ** 2) / 2) ** 0.5  # of 2, 4, 10 (the NaN skipped)
    assert stds[0] == pytest.approx(2**0.5) and stds[1] == pytest.approx(sample_std)
    _, _, sems = interval_means(steps, values, bins=2, error="sem")
    assert sems[0] == pytest.approx(1.0) and sems[1] == pytest.approx(stds[1] / 3**0.5)


def write_log(run, columns, rows):
    run.mkdir(parents=True)
    with (run / "logprobs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return run


def dpo_rows(steps):
    return [
        {
            "step": step,
            "epoch": step / 10,
            "loss": 0.69 - 0.01 * step,
            "learning_rate": 2e-6,
            "logps/chosen": -300.0 - step,  # long chosen answers: far below the short rejected ones
            "logps/rejected": -80.0 - 3 * step,
            "rewards/chosen": 0.0,
            "rewards/rejected": -0.2 * step,
            "rewards/margins": 0.2 * step,
            "rewards/accuracies": min(1.0, 0.5 + 0.1 * step),
        }
        for step in steps
    ]


def series(axis) -> dict[str, list[float]]:
    """The plotted means by legend label (each errorbar's data line)."""
    return {c.get_label(): list(c.lines[0].get_ydata()) for c in axis.containers}


def test_figure_7_has_the_reward_panel_and_labels_the_bins_it_used(tmp_path):
    from trainer_min.logprobs import COLUMNS

    dpo = write_log(tmp_path / "dpo-run", COLUMNS["dpo"], dpo_rows([1, 2, 3]))
    sft_rows = [
        {"step": s, "epoch": s, "loss": 2.0 / s, "learning_rate": 1e-5, "chosen_token_logp": -2.0 / s,
         "mean_token_accuracy": 0.2 * s}
        for s in range(1, 8)
    ]  # fmt: skip
    sft = write_log(tmp_path / "sft-run", COLUMNS["sft"], sft_rows)
    figure = draw_figure([dpo, sft], bins=10, error="sem")
    (dpo_top, sft_top), (dpo_bottom, sft_bottom) = figure.axes[0:2], figure.axes[2:4]
    assert "SUMMED" in dpo_top.get_ylabel() and "per token" in sft_top.get_ylabel()
    # 3 logged steps with --bins 10: three intervals, and the axis says three
    assert "means of 3 equal intervals; bars: sem" in dpo_bottom.get_xlabel()
    assert "means of 7 equal intervals" in sft_bottom.get_xlabel()
    twin = figure.axes[4]  # the reward accuracies' own axis, sharing the DPO bottom panel's x
    assert series(dpo_bottom)["reward margin (chosen - rejected)"] == pytest.approx([0.2, 0.4, 0.6])
    assert series(twin)["reward accuracy"] == pytest.approx([0.6, 0.7, 0.8])
    assert series(dpo_top)["chosen"] == pytest.approx([-301.0, -302.0, -303.0])
    figure.canvas.draw()
    for axis in (dpo_top, dpo_bottom, sft_bottom):
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
