"""The SFT baseline of the paper's Table 3: the same LoRA trained on the chosen answers only.

Rows are the exported pairs' prompt and chosen answer as a conversational prompt-completion dataset (one row
per unit: a unit's weaken and inject pairs share their chosen answer), trained with stock ``SFTTrainer`` and
TRL's own ``SFTConfig`` (as :class:`~trainer_min.config.BPOSFTConfig`: the loss on the answer tokens only).
Command line: ``bpo-train sft ...`` or ``python -m trainer_min.sft ...`` (the same flags).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trainer_min import training
from trainer_min.script import run_script

if TYPE_CHECKING:
    from transformers import TrainerCallback
    from trl import ModelConfig, SFTConfig, SFTTrainer

    from trainer_min.config import BPOScriptArguments, TrainingParser

PROG = "python -m trainer_min.sft"


def make_parser(prog: str | None = PROG) -> TrainingParser:
    """TRL's parser over the script arguments, the baseline's SFTConfig and ModelConfig; ``--config`` YAML."""
    from trainer_min.config import BPOModelConfig, BPOScriptArguments, BPOSFTConfig, TrainingParser

    return TrainingParser(
        (BPOScriptArguments, BPOSFTConfig, BPOModelConfig),
        prog=prog,
        description="The SFT baseline: the same LoRA on the chosen answers only, with stock TRL. Every "
        "TrainingArguments / SFTConfig / ModelConfig field is a flag; --config FILE.yaml sets them by name.",
    )


def build(
    script_args: BPOScriptArguments,
    sft_config: SFTConfig,
    model_config: ModelConfig,
    callbacks: Sequence[TrainerCallback] = (),
) -> training.Run:
    """An SFTTrainer over the chosen answers of the selected pairs, with the LoRA applied."""
    from trl import SFTTrainer

    return training.build("sft", SFTTrainer, script_args, sft_config, model_config, callbacks)


def train(
    script_args: BPOScriptArguments,
    sft_config: SFTConfig,
    model_config: ModelConfig,
    callbacks: Sequence[TrainerCallback] = (),
) -> SFTTrainer:
    """Train; save adapter, processor, training_config.json and logprobs.csv in ``sft_config.output_dir``."""
    return training.train(build(script_args, sft_config, model_config, callbacks))


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The command: parse ``argv`` (default ``sys.argv[1:]``), train; the exit code (2: a bad setting)."""
    return run_script(argv, prog, make_parser, build)


if __name__ == "__main__":
    sys.exit(main())
