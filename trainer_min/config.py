"""The settings of a training run: one dataclass whose defaults are the paper's or the authors' scripts'.

Each field carries its help text and the source of its default. The `bpo-train dpo|sft` flags are built
from these fields (flag = field name with dashes), a YAML config file uses the same names as keys, and
`training_config.json` records them, so there is one list of settings and one place that says where each
default comes from.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OBJECTIVES = ("dpo", "sft")

PAPER = "paper (Pi et al. 2024, arXiv:2403.08730)"
BPO_SCRIPT = "authors' scripts/finetune_bpo.sh"
SFT_SCRIPT = "authors' scripts/finetune_sft.sh"
BPO_CODE = "authors' llava/train/bpo_llava.py"
OURS = "this project"


def _setting(default: Any = dataclasses.MISSING, *, help: str, source: str, only: str | None = None) -> Any:
    metadata = {"help": help, "source": source, "only": only}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """One LoRA DPO or SFT run on LLaVA-1.5; ``None`` for bf16, checkpointing or workers: "decide by GPU"."""

    dataset: str = _setting(
        help="Export directory or Hub id of the BPO pairs (the published schema).", source=""
    )
    output_dir: str = _setting(help="Run directory: adapter, processor, logs, checkpoints.", source="")
    model: str = _setting(
        "llava-hf/llava-1.5-7b-hf",
        help="Base LLaVA-1.5 model id or directory.",
        source=f"{PAPER}: LLaVA-1.5-7B",
    )
    dataset_revision: str | None = _setting(
        None, help="Hub revision (tag or commit) of the dataset, for reproducible runs.", source=OURS
    )
    split: str = _setting("train", help="Dataset split.", source="the published schema has one train split")
    max_samples: int | None = _setting(
        None,
        help="Train on this many pairs, the ones with the smallest stable hash of `id` (nested subsets).",
        source=f"{PAPER}: dataset-size sweep",
    )
    sources: list[str] | None = _setting(
        None,
        help="Keep only these `source` values (comma-separated or repeated).",
        source=f"{PAPER}: ablations",
    )
    negative_types: list[str] | None = _setting(
        None,
        help="Keep only these `negative_type` values: weaken, inject (comma-separated or repeated).",
        source=f"{PAPER}: ablations (image-weakened only, injected only)",
    )
    lora_r: int = _setting(64, help="LoRA rank.", source=f"{PAPER}; {BPO_SCRIPT} later used 32")
    lora_alpha: int = _setting(256, help="LoRA alpha.", source=f"{PAPER}; {BPO_SCRIPT}")
    lora_dropout: float = _setting(
        0.05,
        help="LoRA dropout (DPO turns every dropout off: TRL's disable_dropout, as the authors' TRL did).",
        source=f"{BPO_CODE} default",
    )
    freeze_projector: bool = _setting(
        False,
        help="Keep the multimodal projector frozen (by default it is trained with the adapter).",
        source=f"{BPO_SCRIPT} trains it (mm_projector_lr 2e-6)",
    )
    learning_rate: float = _setting(
        2e-6, help="Peak learning rate (adapter and projector).", source=BPO_SCRIPT
    )
    num_train_epochs: float = _setting(2.0, help="Epochs over the pairs.", source=f"{PAPER}; {BPO_SCRIPT}")
    max_steps: int = _setting(
        -1, help="Stop after this many optimizer steps (-1: run all epochs).", source=OURS
    )
    per_device_train_batch_size: int = _setting(
        4, help="Pairs per GPU per step (x 8 GPUs = 32 in the paper).", source=BPO_SCRIPT
    )
    gradient_accumulation_steps: int = _setting(
        1, help="Micro-batches per optimizer step (8 on one GPU gives the paper's 32).", source=BPO_SCRIPT
    )
    beta: float = _setting(0.1, help="DPO beta.", source=f"{PAPER}; {BPO_CODE}", only="dpo")
    lr_scheduler_type: str = _setting("cosine", help="Learning-rate schedule.", source=BPO_SCRIPT)
    warmup_ratio: float = _setting(0.03, help="Fraction of the steps spent warming up.", source=BPO_SCRIPT)
    weight_decay: float = _setting(0.0, help="AdamW weight decay.", source=BPO_SCRIPT)
    bf16: bool | None = _setting(
        None, help="bf16 weights and autocast (default: on when a CUDA GPU supports it).", source=BPO_SCRIPT
    )
    gradient_checkpointing: bool | None = _setting(
        None, help="Recompute activations to save memory (default: on a GPU).", source=BPO_SCRIPT
    )
    logging_steps: int = _setting(
        1, help="Log (and keep log-probs) every N steps; Figure 7 needs every step.", source=BPO_SCRIPT
    )
    save_steps: int = _setting(
        500, help="Write a resumable checkpoint every N steps.", source=f"{OURS} (the authors saved none)"
    )
    save_total_limit: int | None = _setting(2, help="Keep only the newest N checkpoints.", source=OURS)
    seed: int = _setting(
        42, help="Seed of the adapter init and the data order.", source="transformers default"
    )
    dataloader_num_workers: int | None = _setting(
        None, help="Data-loading processes (default: 4 on a GPU, 0 on CPU).", source=BPO_SCRIPT
    )
    report_to: str = _setting(
        "none", help="Trackers to report to: none, wandb, tensorboard, ...", source=OURS
    )
    resume_from_checkpoint: str | None = _setting(
        None,
        help="Continue a run: a checkpoint directory, or `last` for the newest in --output-dir.",
        source=OURS,
    )

    def __post_init__(self) -> None:
        self.sources = _split_values(self.sources)
        self.negative_types = _split_values(self.negative_types)
        for name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(
                f"max_samples must be at least 1 (or unset for all pairs), got {self.max_samples}"
            )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @classmethod
    def for_objective(cls, objective: str, **values: Any) -> TrainConfig:
        """A config with the defaults of ``objective`` (dpo or sft) under the given values."""
        return cls(**{**defaults(objective), **values})

    def settings(self, objective: str) -> dict[str, Any]:
        """The fields that apply to ``objective``, as plain JSON values."""
        return {f.name: getattr(self, f.name) for f in fields_for(objective)}


# The SFT baseline differs from DPO only where the authors' SFT script does.
SFT_DEFAULTS: dict[str, tuple[Any, str]] = {
    "num_train_epochs": (1.0, SFT_SCRIPT),
    "learning_rate": (2e-6, f"{SFT_SCRIPT} (the first of its two runs; the second used 1e-5)"),
}


def fields_for(objective: str) -> list[dataclasses.Field]:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {OBJECTIVES}")
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["only"] in (None, objective)]


def defaults(objective: str) -> dict[str, Any]:
    """Default of every field of ``objective`` that has one."""
    out = {}
    for f in fields_for(objective):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if objective == "sft" and f.name in SFT_DEFAULTS:
            default = SFT_DEFAULTS[f.name][0]
        if default is not dataclasses.MISSING:
            out[f.name] = default
    return out


def source_of(objective: str, name: str) -> str:
    if objective == "sft" and name in SFT_DEFAULTS:
        return SFT_DEFAULTS[name][1]
    return TrainConfig.__dataclass_fields__[name].metadata["source"]


def field_types() -> dict[str, Any]:
    """Resolved annotations of TrainConfig (this module uses postponed annotations)."""
    return typing.get_type_hints(TrainConfig)


def read_yaml_settings(path: str | Path, objective: str) -> dict[str, Any]:
    """Settings from a YAML file whose keys are the flags (``lora-r`` or ``lora_r``), checked by name."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the config file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a mapping of flag: value, got {type(data).__name__}")
    known = {f.name for f in fields_for(objective)}
    settings = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in known:
            raise ValueError(
                f"{path}: unknown setting {key!r} for `bpo-train {objective}`; "
                f"valid keys are {', '.join(sorted(k.replace('_', '-') for k in known))}"
            )
        settings[name] = value
    return settings


def _split_values(values: list[str] | str | None) -> list[str] | None:
    """``["a,b", "c"]`` or ``"a,b,c"`` -> ``["a", "b", "c"]``; empty -> None (no filter)."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    out = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    return out or None
