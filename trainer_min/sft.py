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
from trainer_min.logprobs import LogProbLogger
from trainer_min.lora import lora_config, upcast_trainable
from trainer_min.training import Run, load_model, prepare_data, resolve_hardware, train, training_arguments

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import SFTTrainer


def build_sft(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> Run:
    """An SFTTrainer over the chosen answers of the selected pairs, with the LoRA applied."""
    from trl import SFTConfig, SFTTrainer

    hardware = resolve_hardware(cfg)
    dataset, data = prepare_data(cfg, "sft")
    model, processor = load_model(cfg, hardware)
    args = SFTConfig(**training_arguments(cfg, hardware), completion_only_loss=True)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(cfg, model),
        callbacks=[LogProbLogger(cfg.output_dir, "sft"), *callbacks],
    )
    upcast_trainable(trainer.model)
    return Run(trainer=trainer, config=cfg, objective="sft", data=data, hardware=hardware)


def train_sft(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> SFTTrainer:
    """Train; save adapter, processor, training_config.json and logprobs.csv in ``cfg.output_dir``."""
    return train(build_sft(cfg, callbacks))


if __name__ == "__main__":
    from trainer_min.cli import run_command

    run_command("sft", sys.argv[1:], prog_name="python -m trainer_min.sft")
