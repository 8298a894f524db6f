"""The settings of a run: TRL's own configs, subclassed only to carry the paper's defaults.

``TrlParser((BPOScriptArguments, BPODPOConfig, BPOModelConfig))`` gives the flags and the ``--config`` YAML,
as TRL's ``trl/scripts/dpo.py`` does, so every ``TrainingArguments`` / ``DPOConfig`` / ``SFTConfig`` /
``ModelConfig`` field is settable. A default this project changes is re-declared here with a help text that
names its source (``[source: ...]``); :func:`default_sources` reads those back for ``training_config.json``.

Settings whose best value depends on the machine (bf16, gradient checkpointing, data workers) default to
``None`` = "decide by GPU presence": on a CUDA GPU the paper's, on CPU what a CPU can do.

Importing this module imports TRL and transformers (seconds); ``trainer_min.dpo`` / ``trainer_min.sft``
import it only once a command has passed its cheap checks.
"""

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from transformers.trainer_utils import SchedulerType
from trl import DPOConfig, ModelConfig, SFTConfig, TrlParser

from trainer_min.data import check_dataset_location, split_values
from trainer_min.errors import UserError
from trainer_min.hub import DEFAULT_MODEL

PAPER = "paper (Pi et al. 2024, arXiv:2403.08730)"
BPO_SCRIPT = "authors' scripts/finetune_bpo.sh"
SFT_SCRIPT = "authors' scripts/finetune_sft.sh"
BPO_CODE = "authors' llava/train/bpo_llava.py"
OURS = "this project"
BY_HARDWARE = "decided by the machine when not given"

_SOURCE = re.compile(r"\[source: (.*)\]$")


def _paper(default: Any, source: str, help: str, **metadata: Any) -> Any:
    """A field whose default this project sets, with its source at the end of the help text."""
    help_text = f"{help} [source: {source}]"
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_text, **metadata})
    return field(default=default, metadata={"help": help_text, **metadata})


class UsageError(UserError, ValueError):
    """A setting that cannot be used; the message names the flag and what to do."""


@dataclass
class BPOScriptArguments:
    """Which pairs to train on: a `bpo-data` export (or its Hub copy), filtered by provenance, subset."""

    dataset: str = field(
        metadata={"help": "Export directory written by `bpo-data export`, or a Hub dataset id."}
    )
    dataset_revision: str | None = _paper(
        None, OURS, "Hub revision (tag or commit) of the dataset, for reproducible runs."
    )
    split: str = _paper("train", "the published schema has one train split", "Dataset split to train on.")
    eval_split: str | None = _paper(
        None,
        OURS,
        "Dataset split to evaluate on when --eval-strategy is not `no` (same provenance filters).",
    )
    max_samples: int | None = _paper(
        None,
        f"{PAPER}: dataset-size sweep",
        "Train on the N pairs with the smallest stable hash of `id` (nested subsets). Default: all.",
    )
    sources: list[str] | None = _paper(
        None,
        f"{PAPER}: ablations",
        "Keep only these `source` values (space- or comma-separated). Default: all.",
    )
    negative_types: list[str] | None = _paper(
        None,
        f"{PAPER}: ablations (image-weakened only, injected only)",
        "Keep only these `negative_type` values: weaken, inject (space- or comma-separated). Default: all.",
    )
    freeze_projector: bool = _paper(
        False,
        f"{BPO_SCRIPT} trains it (mm_projector_lr 2e-6)",
        "Keep the multimodal projector frozen (by default it is trained in full with the adapter).",
    )

    def __post_init__(self) -> None:
        self.sources = split_values(self.sources)
        self.negative_types = split_values(self.negative_types)
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(
                f"--max-samples must be at least 1 (or left out: all pairs), got {self.max_samples}"
            )
        check_dataset_location(self.dataset)


@dataclass
class BPOModelConfig(ModelConfig):
    """TRL's ModelConfig with the paper's base model and LoRA; a LoRA adapter is always trained."""

    model_name_or_path: str = _paper(
        DEFAULT_MODEL,
        f"{PAPER}: LLaVA-1.5-7B",
        "Base LLaVA-1.5 model: a llava-hf id or a directory written by save_pretrained.",
        aliases=["--model"],
    )
    dtype: str | None = _paper(
        None,
        "follows --bf16: bfloat16 weights as the authors trained, float32 without",
        "dtype of the base weights. Default: bfloat16 under --bf16, else float32.",
        choices=["auto", "bfloat16", "float16", "float32"],
    )
    use_peft: bool = _paper(True, PAPER, "Train a LoRA adapter (trainer_min always does).")
    lora_r: int = _paper(64, f"{PAPER}; {BPO_SCRIPT} later used 32", "LoRA rank.")
    lora_alpha: int = _paper(256, f"{PAPER}; {BPO_SCRIPT}", "LoRA alpha.")
    lora_dropout: float = _paper(
        0.05,
        f"{BPO_CODE} default",
        "LoRA dropout (DPO turns every dropout off: TRL's --disable-dropout, as the authors' TRL did).",
    )
    lora_target_modules: list[str] | None = _paper(
        None,
        f"{BPO_CODE} find_all_linear_names",
        "Modules to put LoRA on. Default: every linear layer of the language model, never the vision tower.",
    )
    lora_modules_to_save: list[str] | None = _paper(
        None,
        f"{BPO_SCRIPT} (mm_projector_lr)",
        "Further modules trained in full; the projector is always among them unless --freeze-projector.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.use_peft:
            raise UsageError(
                "--use-peft false: trainer_min always trains a LoRA adapter; for full fine-tuning use "
                "TRL's own `trl dpo` / `trl sft`"
            )
        if self.load_in_4bit or self.load_in_8bit:
            raise UsageError(
                "--load-in-4bit / --load-in-8bit are not supported by trainer_min (the adapter trains on "
                "bf16 or float32 weights); drop the flag"
            )


@dataclass
class _PaperTraining:
    """TrainingArguments defaults of the BPO run and its SFT baseline (mixed in before TRL's config)."""

    output_dir: str = field(metadata={"help": "Run directory: adapter, processor, logs, checkpoints."})
    learning_rate: float = _paper(2e-6, BPO_SCRIPT, "Peak learning rate (adapter and projector).")
    num_train_epochs: float = _paper(2.0, f"{PAPER}; {BPO_SCRIPT}", "Epochs over the pairs.")
    per_device_train_batch_size: int = _paper(
        4, BPO_SCRIPT, "Pairs per GPU per step (x 8 GPUs = 32 in the paper)."
    )
    gradient_accumulation_steps: int = _paper(
        1, BPO_SCRIPT, "Micro-batches per optimizer step (8 on one GPU gives the paper's 32)."
    )
    lr_scheduler_type: SchedulerType | str = _paper("cosine", BPO_SCRIPT, "Learning-rate schedule.")
    warmup_steps: float = _paper(
        0.03,
        f"{BPO_SCRIPT} (warmup_ratio 0.03)",
        "Warm-up: below 1 a fraction of the steps, else a step count.",
    )
    weight_decay: float = _paper(0.0, BPO_SCRIPT, "AdamW weight decay.")
    logging_steps: float = _paper(
        1, BPO_SCRIPT, "Log (and keep log-probs) every N steps; Figure 7 needs every step."
    )
    save_steps: float = _paper(
        500, f"{OURS} (the authors saved none)", "Write a resumable checkpoint every N steps."
    )
    save_total_limit: int | None = _paper(2, OURS, "Keep only the newest N checkpoints.")
    report_to: str | None = _paper(
        "none", OURS, "Trackers to report to: none, wandb, tensorboard, trackio, all."
    )
    max_length: int | None = _paper(
        None,
        f"{OURS} (the authors truncated at 2048)",
        "Truncate sequences to this many tokens. Default: never, since truncation cuts image tokens out.",
    )
    bf16: bool | None = _paper(
        None,
        f"{BPO_SCRIPT} (--bf16 True); {BY_HARDWARE}",
        "bf16 mixed precision. Default: on when a CUDA GPU has it.",
        nargs="?",
        const=True,  # a bare --bf16 means true
    )
    gradient_checkpointing: bool | None = _paper(
        None,
        f"{BPO_SCRIPT}; {BY_HARDWARE}",
        "Recompute activations to save memory. Default: on a CUDA GPU.",
        nargs="?",
        const=True,
    )
    dataloader_num_workers: int | None = _paper(
        None, f"{BPO_SCRIPT}; {BY_HARDWARE}", "Data-loading processes. Default: 4 on a CUDA GPU, 0 on CPU."
    )

    def __post_init__(self) -> None:
        self._decide_by_hardware()
        super().__post_init__()

    def _decide_by_hardware(self) -> None:
        """Fill the machine-dependent settings left unset, before transformers validates them."""
        import torch

        cuda = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = not self.fp16 and cuda and torch.cuda.is_bf16_supported()
        if self.gradient_checkpointing is None and getattr(self, "activation_checkpointing", None) is None:
            # newer transformers call it activation_checkpointing and keep the old name as an alias
            name = (
                "activation_checkpointing"
                if hasattr(self, "activation_checkpointing")
                else "gradient_checkpointing"
            )
            setattr(self, name, cuda)
        if self.dataloader_num_workers is None:
            self.dataloader_num_workers = 4 if cuda else 0
        if not cuda and not torch.backends.mps.is_available():
            self.use_cpu = True  # what transformers needs on a CPU-only machine (also for bf16 there)


@dataclass
class BPODPOConfig(_PaperTraining, DPOConfig):
    """TRL's DPOConfig with the paper's BPO settings."""

    beta: float = _paper(
        0.1, f"{PAPER}; {BPO_CODE}", "DPO beta: how far the policy may move from the base model."
    )


@dataclass
class BPOSFTConfig(_PaperTraining, SFTConfig):
    """TRL's SFTConfig for the SFT baseline: the BPO settings except where the authors' SFT script differs."""

    num_train_epochs: float = _paper(1.0, SFT_SCRIPT, "Epochs over the chosen answers.")
    learning_rate: float = _paper(
        2e-6, f"{SFT_SCRIPT} (the first of its two runs; the second used 1e-5)", "Peak learning rate."
    )
    completion_only_loss: bool | None = _paper(True, PAPER, "Loss on the answer tokens only.")


def default_sources(*configs: Any) -> dict[str, str]:
    """``{field: source}`` for every field of these configs whose default this project set."""
    found = {}
    for config in configs:
        for f in fields(config):
            match = _SOURCE.search(f.metadata.get("help", ""))
            if match:
                found[f.name] = match.group(1)
    return found


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)", except where the help text already says the default in words: a field
    decided by the machine or by another flag would otherwise read "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if "Default:" in help_text:
            return help_text
        return super()._get_help_string(action)


class TrainingParser(TrlParser):
    """TrlParser whose errors are one line naming the flag (a UsageError), not argparse's usage dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse calls this for a bad or missing flag
        raise UsageError(f"{message}; see `{self.prog} --help`")

    def parse(self, argv: Sequence[str]) -> tuple[Any, ...]:
        """The dataclasses from ``argv`` (``--config FILE.yaml`` sets defaults, flags win), or UsageError."""
        import yaml

        try:
            *parsed, unknown = self.parse_args_and_config(list(argv), return_remaining_strings=True)
        except UsageError:
            raise
        except (ValueError, OSError, yaml.YAMLError) as err:  # a dataclass's own check, or the config file
            raise UsageError(str(err).strip()) from err
        if unknown:
            raise UsageError(
                f"unknown flag or --config key: {' '.join(unknown)}; see `{self.prog} --help` "
                "(config keys are the flag names with underscores, e.g. learning_rate)"
            )
        return tuple(parsed)
