"""The paper's Figure 7 from runs' ``logprobs.csv``: how the answers' log-probabilities move in training.

Each run gets a column of two panels. The logged steps are cut into ``bins`` consecutive intervals holding
the same number of steps (fewer when fewer steps were logged: the axis says how many were used); a point
is the mean over an interval (placed at its mean step) and its bar is the sample standard deviation
(n - 1) of the per-step values in it (``error="std"``) or the standard error of that mean, std / sqrt(n)
(``error="sem"``).

- DPO, top: the chosen and the rejected answer's log-probability as TRL logs them (``logps/chosen`` /
  ``logps/rejected``): *summed* over the answer's tokens, mean over the step's pairs. A sum falls with
  length, so a short rejected answer can sit above a long chosen one while training works; the axis
  says so. Bottom: what DPO optimises, free of length: the reward margin (beta times the policy/reference
  log-ratio of chosen minus rejected) and the reward accuracy (pairs whose chosen reward is higher).
- SFT, top: the ground-truth answer's mean log-probability *per token* (-loss); bottom: the share of its
  tokens the model predicts (TRL's ``mean_token_accuracy``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer_min.errors import InputError
from trainer_min.logprobs import read_log

ERRORS = ("std", "sem")
# (column, label, colour, marker) per objective: the log-prob panel, then the training-signal panel.
SERIES = {
    "dpo": (("logps/chosen", "chosen", "tab:blue", "o"), ("logps/rejected", "rejected", "tab:red", "s")),
    "sft": (("chosen_token_logp", "ground truth (chosen)", "tab:green", "o"),),
}
SIGNALS = {
    "dpo": (
        ("rewards/margins", "reward margin (chosen - rejected)", "tab:purple", "o"),
        ("rewards/accuracies", "reward accuracy", "tab:orange", "s"),
    ),
    "sft": (("mean_token_accuracy", "token accuracy", "tab:orange", "s"),),
}
Y_LABELS = {
    "dpo": "log p(answer | image, prompt), SUMMED over\nthe answer's tokens (longer answers are lower)",
    "sft": "log p per token of the ground-truth answer\n(mean over its tokens, = -loss)",
}
SIGNAL_LABELS = {"dpo": "reward margin (β · log-ratio)", "sft": "token accuracy"}


def interval_means(
    steps: Sequence[float], values: Sequence[float], bins: int, error: str = "std"
) -> tuple[list[float], list[float], list[float]]:
    """(mean step, mean value, std or sem) of ``bins`` consecutive equal-count intervals; NaNs skipped.

    Fewer intervals come back when fewer than ``bins`` values are there (none for no values)."""
    if error not in ERRORS:
        raise InputError(f"--error must be one of {', '.join(ERRORS)}, got {error!r}")
    points = sorted((s, v) for s, v in zip(steps, values) if not math.isnan(v))
    bins = min(bins, len(points))
    centres, means, errors = [], [], []
    for index in range(bins):
        chunk = points[index * len(points) // bins : (index + 1) * len(points) // bins]
        chunk_values = [v for _, v in chunk]
        mean = sum(chunk_values) / len(chunk_values)
        spread = (
            math.sqrt(sum((v - mean) ** 2 for v in chunk_values) / (len(chunk_values) - 1))
            if len(chunk_values) > 1
            else 0.0
        )
        centres.append(sum(s for s, _ in chunk) / len(chunk))
        means.append(mean)
        errors.append(spread if error == "std" else spread / math.sqrt(len(chunk_values)))
    return centres, means, errors


def plot_runs(run_dirs: Sequence[str | Path], to: str | Path, bins: int = 10, error: str = "std") -> Path:
    """Draw one Figure-7 column (log-probs above, rewards or token accuracy below) per run into ``to``."""
    import matplotlib.pyplot as plt

    figure = draw_figure(run_dirs, bins, error)
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(to, dpi=120)
    plt.close(figure)
    return to


def draw_figure(run_dirs: Sequence[str | Path], bins: int = 10, error: str = "std") -> Any:
    """The matplotlib Figure of :func:`plot_runs` (two rows of panels, one column per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise InputError("give at least one run directory to plot")
    if bins < 1:
        raise InputError(f"--bins must be at least 1, got {bins}")
    logs = [(Path(run_dir), *read_log(run_dir)) for run_dir in run_dirs]
    figure, axes = plt.subplots(
        2, len(logs), figsize=(5.8 * len(logs), 7.6), squeeze=False, height_ratios=(3, 2), sharex="col"
    )
    for column, (run_dir, objective, rows) in enumerate(logs):
        if not rows:
            raise InputError(
                f"{run_dir / 'logprobs.csv'} has no logged steps yet; plot once training has logged"
            )
        top, bottom = axes[0][column], axes[1][column]
        steps = [row["step"] for row in rows]
        used = _draw(top, steps, rows, SERIES[objective], bins, error)
        top.set_title(f"{run_dir.name} ({objective.upper()})")
        top.set_ylabel(Y_LABELS[objective])
        _draw_signals(bottom, steps, rows, objective, bins, error)
        bottom.set_xlabel(f"training step (points: means of {used} equal intervals; bars: {error})")
        for axis in (top, bottom):
            _integer_steps(axis)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _draw(
    axis: Any, steps: list[float], rows: list[dict[str, float]], series: tuple, bins: int, error: str
) -> int:
    """Plot each (column, label, colour, marker) series; the number of intervals actually used."""
    used = 0
    for column, label, colour, marker in series:
        x, y, bars = interval_means(steps, [row.get(column, math.nan) for row in rows], bins, error)
        if x:
            axis.errorbar(x, y, yerr=bars, label=label, color=colour, marker=marker, capsize=3)
        used = max(used, len(x))
    axis.legend(loc="best")
    return used


def _draw_signals(
    axis: Any, steps: list[float], rows: list[dict[str, float]], objective: str, bins: int, error: str
) -> None:
    """DPO: reward margin on the left axis, reward accuracy (0 to 1) on the right; SFT: token accuracy."""
    first, *rest = SIGNALS[objective]
    _draw(axis, steps, rows, (first,), bins, error)
    axis.set_ylabel(SIGNAL_LABELS[objective])
    if objective == "sft":
        axis.set_ylim(0, 1)
        return
    axis.axhline(0.0, color="grey", linewidth=0.8)
    right = axis.twinx()
    _draw(right, steps, rows, tuple(rest), bins, error)
    right.set_ylim(0, 1.05)
    right.set_ylabel("reward accuracy (share of pairs)")
    handles = [*axis.get_legend_handles_labels()[0], *right.get_legend_handles_labels()[0]]
    labels = [*axis.get_legend_handles_labels()[1], *right.get_legend_handles_labels()[1]]
    right.get_legend().remove()
    axis.legend(handles, labels, loc="lower right")


def _integer_steps(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
