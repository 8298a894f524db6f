"""The SFT baseline of the paper's Table 3: the same LoRA trained on the chosen answers only.

Rows are the exported pairs' prompt and chosen answer as a conversational prompt-completion dataset
(one row per unit: a unit's weaken and inject pairs share their chosen answer), trained with stock
``SFTTrainer`` and the loss on the answer tokens only. Run it as ``bpo-train sft ...`` or
``python -m trainer_min.sft ...``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainer_min.config import TrainConfig
from trainer_min.training import Run, build, train

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import SFTTrainer


def build_sft(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> Run:
    """An SFTTrainer over the chosen answers of the selected pairs, with the LoRA applied."""
    from trl import SFTConfig, SFTTrainer

    return build(cfg, "sft", SFTTrainer, SFTConfig, callbacks, completion_only_loss=True)


def train_sft(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> SFTTrainer:
    """Train; save adapter, processor, training_config.json and logprobs.csv in ``cfg.output_dir``."""
    return train(build_sft(cfg, callbacks))


if __name__ == "__main__":
    from trainer_min.cli import run_command

    run_command("sft", sys.argv[1:], prog_name="python -m trainer_min.sft")
