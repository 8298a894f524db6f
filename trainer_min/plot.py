"""The paper's Figure 7 from runs' ``logprobs.csv``: how the answers' log-probabilities move in training.

Each run gets a panel. The logged steps are cut into ``bins`` consecutive intervals holding the same
number of steps; a point is the mean over an interval (placed at its mean step) and its bar is the
sample standard deviation (n - 1) of the per-step values in it (``error="std"``) or the standard error
of that mean, std / sqrt(n) (``error="sem"``). DPO panels show the chosen and the rejected answer's
log-probability (TRL's ``logps/chosen`` / ``logps/rejected``: summed over the answer's tokens, mean
over the step's pairs); SFT panels show the ground-truth answer's mean log-probability per token
(-loss). The two are on different scales, hence one panel, with its own axis, per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from trainer_min.logprobs import read_log

ERRORS = ("std", "sem")
SERIES = {
    "dpo": (("logps/chosen", "chosen", "tab:blue", "o"), ("logps/rejected", "rejected", "tab:red", "s")),
    "sft": (("chosen_token_logp", "ground truth (chosen)", "tab:green", "o"),),
}
Y_LABELS = {
    "dpo": "log p(answer | image, prompt)\nsummed over the answer's tokens",
    "sft": "log p per token of the ground-truth answer\n(-loss)",
}


def interval_means(
    steps: Sequence[float], values: Sequence[float], bins: int, error: str = "std"
) -> tuple[list[float], list[float], list[float]]:
    """(mean step, mean value, std or sem) of ``bins`` consecutive equal-count intervals; NaNs skipped."""
    if error not in ERRORS:
        raise ValueError(f"error must be one of {ERRORS}, got {error!r}")
    points = sorted((s, v) for s, v in zip(steps, values) if not math.isnan(v))
    bins = max(1, min(bins, len(points)))
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
    """Draw one Figure-7 panel per run directory into the PNG ``to``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ValueError("give at least one run directory to plot")
    logs = [(Path(run_dir), *read_log(run_dir)) for run_dir in run_dirs]
    figure, axes = plt.subplots(1, len(logs), figsize=(5.5 * len(logs), 4.2), squeeze=False)
    for axis, (run_dir, objective, rows) in zip(axes[0], logs):
        if not rows:
            raise ValueError(
                f"{run_dir / 'logprobs.csv'} has no logged steps yet; plot once training has logged"
            )
        steps = [row["step"] for row in rows]
        for column, label, colour, marker in SERIES[objective]:
            x, y, bars = interval_means(steps, [row[column] for row in rows], bins, error)
            axis.errorbar(x, y, yerr=bars, label=label, color=colour, marker=marker, capsize=3)
        axis.set_title(f"{run_dir.name} ({objective.upper()})")
        axis.set_xlabel(f"training step (mean of each of {bins} intervals; bars: {error})")
        axis.set_ylabel(Y_LABELS[objective])
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(to, dpi=120)
    plt.close(figure)
    return to
