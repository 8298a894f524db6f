"""LoRA DPO on LLaVA-1.5 with stock TRL: the paper's BPO training step.

``DPOTrainer`` gets TRL's own ``DPOConfig`` (as :class:`~trainer_min.config.BPODPOConfig`, the paper's
defaults), the LlavaProcessor as ``processing_class``, a ``peft_config`` and no reference model: with an
adapter, TRL computes the reference log-probs with the adapter (and the trained projector copy) disabled,
which is exactly the base model. ``max_length=None`` keeps every image token.

Command line: ``bpo-train dpo ...`` or ``python -m trainer_min.dpo ...`` (the same flags; what
``accelerate launch -m trainer_min.dpo`` needs for 8 GPUs). Python::

    from trainer_min.config import BPODPOConfig, BPOModelConfig, BPOScriptArguments
    script_args = BPOScriptArguments(dataset="out/demo-dataset", max_samples=1000)
    trainer = train(script_args, BPODPOConfig(output_dir="out/run"), BPOModelConfig())
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainer_min import training
from trainer_min.script import run_script

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer, ModelConfig

    from trainer_min.config import BPOScriptArguments, TrainingParser

PROG = "python -m trainer_min.dpo"


def make_parser(prog: str | None = PROG) -> TrainingParser:
    """TRL's parser over the script arguments, the paper's DPOConfig and ModelConfig; ``--config`` YAML."""
    from trainer_min.config import BPODPOConfig, BPOModelConfig, BPOScriptArguments, TrainingParser

    return TrainingParser(
        (BPOScriptArguments, BPODPOConfig, BPOModelConfig),
        prog=prog,
        description="LoRA DPO (BPO) on LLaVA-1.5 with stock TRL; the paper's settings by default. Every "
        "TrainingArguments / DPOConfig / ModelConfig field is a flag; --config FILE.yaml sets them by name.",
    )


def build(
    script_args: BPOScriptArguments,
    dpo_config: DPOConfig,
    model_config: ModelConfig,
    callbacks: Sequence[TrainerCallback] = (),
) -> training.Run:
    """A DPOTrainer over the selected pairs, with the LoRA applied, ready to train."""
    from trl import DPOTrainer

    return training.build("dpo", DPOTrainer, script_args, dpo_config, model_config, callbacks)


def train(
    script_args: BPOScriptArguments,
    dpo_config: DPOConfig,
    model_config: ModelConfig,
    callbacks: Sequence[TrainerCallback] = (),
) -> DPOTrainer:
    """Train; save adapter, processor, training_config.json and logprobs.csv in ``dpo_config.output_dir``."""
    return training.train(build(script_args, dpo_config, model_config, callbacks))


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The command: parse ``argv`` (default ``sys.argv[1:]``), train; the exit code (2: a bad setting)."""
    return run_script(argv, prog, make_parser, build)


if __name__ == "__main__":
    sys.exit(main())
