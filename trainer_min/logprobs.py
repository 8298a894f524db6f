"""Per-step log-probabilities of the answers: kept next to the run (Figure 7) and measured on demand.

``logprobs.csv`` in the run directory gets one row per logging step, written by the main process:

- DPO: TRL's ``logps/chosen`` and ``logps/rejected`` -- the log-probability of the whole answer (the sum
  over its tokens, given image and prompt) under the policy, averaged over the pairs of the step's batch
  -- and its ``rewards/*`` (beta times the policy/reference log-ratio).
- SFT: ``chosen_token_logp`` = -loss, the mean log-probability per token of the ground-truth answer:
  TRL's SFT loss is the NLL summed over completion tokens divided by their number in the whole step
  (all micro-batches and devices), so this is a token-weighted mean over the step's batch.

A resumed run keeps the rows up to its checkpoint's step and appends from there.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from trainer_min.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from torch import nn
    from transformers import ProcessorMixin, TrainerControl, TrainerState, TrainingArguments

LOG_FILE = "logprobs.csv"
COLUMNS = {
    "dpo": (
        "step",
        "epoch",
        "loss",
        "learning_rate",
        "logps/chosen",
        "logps/rejected",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
    ),
    "sft": ("step", "epoch", "loss", "learning_rate", "chosen_token_logp", "mean_token_accuracy"),
}


class LogProbLogger(TrainerCallback):
    """Append each training log's answer log-probs to ``<run_dir>/logprobs.csv``."""

    def __init__(self, run_dir: str | Path, objective: str):
        self.path = Path(run_dir) / LOG_FILE
        self.columns = COLUMNS[objective]

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        kept = []
        if state.global_step > 0 and self.path.is_file():  # resumed: drop rows past the checkpoint
            kept = [row for row in _read_rows(self.path) if float(row["step"]) <= state.global_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return  # eval logs carry eval_loss; the end-of-training summary carries train_loss
        row = {"step": state.global_step, **logs}
        if "chosen_token_logp" in self.columns:
            row["chosen_token_logp"] = -float(logs["loss"])
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(row)


def read_log(run_dir: str | Path) -> tuple[str, list[dict[str, float]]]:
    """(objective, rows) of a run's ``logprobs.csv``; empty cells become NaN."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: give the --output-dir of a `bpo-train dpo` or `bpo-train sft` run"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        header = tuple(csv.DictReader(handle).fieldnames or ())
    objective = next((name for name, columns in COLUMNS.items() if columns == header), None)
    if objective is None:
        raise InputError(f"{path} has the columns {list(header)}, not those of a DPO or SFT log")
    rows = [
        {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in _read_rows(path)
    ]
    return objective, rows


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class AnswerLogProb:
    """Log-probability of one answer given its image and prompt: the sum over its tokens and their number."""

    total: float
    tokens: int

    @property
    def per_token(self) -> float:
        return self.total / self.tokens


def answer_logprobs(
    model: nn.Module,
    processor: ProcessorMixin,
    rows: Iterable[dict[str, Any]],
    column: str = "chosen",
    batch_size: int = 4,
) -> list[AnswerLogProb]:
    """Score ``row[column]`` as the answer to ``row["prompt"]`` with ``row["images"]``, as TRL tokenizes it.

    Uses TRL's own vision prompt-completion collator, so the tokens scored are the ones SFT trains on and
    the ones DPO sums into ``logps/chosen``.
    """
    import torch
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)
    examples = [{"images": row["images"], "prompt": row["prompt"], "completion": row[column]} for row in rows]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = collator([dict(example) for example in examples[start : start + batch_size]])
            labels = batch.pop("labels").to(device)
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            targets = labels[:, 1:]
            mask = targets != -100
            token_logps = (
                torch.log_softmax(logits[:, :-1], dim=-1)
                .gather(-1, targets.clamp(min=0).unsqueeze(-1))
                .squeeze(-1)
            )
            for total, count in zip((token_logps * mask).sum(dim=1).tolist(), mask.sum(dim=1).tolist()):
                scores.append(AnswerLogProb(total=total, tokens=int(count)))
    finally:
        model.train(was_training)
    return scores
