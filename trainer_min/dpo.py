"""LoRA DPO on LLaVA-1.5 with stock TRL: the paper's BPO training step.

``DPOTrainer`` gets the LlavaProcessor as ``processing_class`` and a ``peft_config``, and no reference
model: with an adapter, TRL computes the reference log-probs with the adapter (and the trained projector
copy) disabled, which is exactly the base model. ``max_length=None`` keeps every image token.

Run it as ``bpo-train dpo ...`` or ``python -m trainer_min.dpo ...`` (the same flags; what
``accelerate launch -m trainer_min.dpo`` needs for 8 GPUs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainer_min.config import TrainConfig
from trainer_min.training import Run, build, train

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import DPOTrainer


def build_dpo(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> Run:
    """A DPOTrainer over the selected pairs, with the LoRA applied, ready to train."""
    from trl import DPOConfig, DPOTrainer

    return build(cfg, "dpo", DPOTrainer, DPOConfig, callbacks, beta=cfg.beta, precompute_ref_log_probs=False)


def train_dpo(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> DPOTrainer:
    """Train; save adapter, processor, training_config.json and logprobs.csv in ``cfg.output_dir``."""
    return train(build_dpo(cfg, callbacks))


if __name__ == "__main__":
    from trainer_min.cli import run_command

    run_command("dpo", sys.argv[1:], prog_name="python -m trainer_min.dpo")
