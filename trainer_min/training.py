"""What a DPO run and an SFT run share: data, model, TrainingArguments, outputs, the run record.

The objectives themselves live in ``dpo.py`` and ``sft.py`` and are stock TRL trainers; this module
builds either one from a :class:`TrainConfig` (:func:`build`, given the objective's TRL classes and
settings) and writes what a later reader needs next to the adapter:
the processor, ``training_config.json`` (every setting, the exact data, the software versions) and the
per-step log-probs (``logprobs.csv``).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer_min.config import TrainConfig, source_of
from trainer_min.data import as_sft, describe, load_pairs, select_pairs
from trainer_min.load import ADAPTER_CONFIG, RUN_RECORD
from trainer_min.lora import lora_config, upcast_trainable

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import LlavaForConditionalGeneration, ProcessorMixin, Trainer, TrainerCallback

PACKAGES = ("bpo-data", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")


@dataclass(frozen=True)
class Hardware:
    """Settings whose default depends on the machine: on a GPU the paper's, on CPU what a CPU can do."""

    bf16: bool
    gradient_checkpointing: bool
    dataloader_num_workers: int
    cuda: bool
    cpu_only: bool  # no CUDA or MPS device: transformers then needs use_cpu (also for bf16 on CPU)


@dataclass
class Run:
    """A trainer ready to train, with what its record needs."""

    trainer: Trainer
    config: TrainConfig
    objective: str
    data: dict[str, Any]
    hardware: Hardware


def build(
    cfg: TrainConfig,
    objective: str,
    trainer_class: type[Trainer],
    config_class: type,
    callbacks: Sequence[TrainerCallback] = (),
    **objective_arguments: Any,
) -> Run:
    """A TRL trainer for ``objective`` over the selected pairs, with the LoRA applied, ready to train.

    ``trainer_class`` / ``config_class`` are the objective's TRL pair (``DPOTrainer`` / ``DPOConfig``, ...)
    and ``objective_arguments`` its own config fields, added to the shared :func:`training_arguments`.
    """
    from trainer_min.logprobs import LogProbLogger

    hardware = resolve_hardware(cfg)
    dataset, data = prepare_data(cfg, objective)
    model, processor = load_model(cfg, hardware)
    trainer = trainer_class(
        model=model,
        args=config_class(**training_arguments(cfg, hardware), **objective_arguments),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(cfg, model),
        callbacks=[LogProbLogger(cfg.output_dir, objective), *callbacks],
    )
    upcast_trainable(trainer.model)
    return Run(trainer=trainer, config=cfg, objective=objective, data=data, hardware=hardware)


def resolve_hardware(cfg: TrainConfig) -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    return Hardware(
        cuda=cuda,
        cpu_only=not cuda and not torch.backends.mps.is_available(),
        bf16=cfg.bf16 if cfg.bf16 is not None else cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda,
        dataloader_num_workers=(
            cfg.dataloader_num_workers if cfg.dataloader_num_workers is not None else (4 if cuda else 0)
        ),
    )


def prepare_data(cfg: TrainConfig, objective: str) -> tuple[Dataset, dict[str, Any]]:
    """The selected pairs (as prompt-completion rows for SFT) and their description for the record."""
    check_output_dir(cfg)
    ds = select_pairs(
        load_pairs(cfg.dataset, cfg.split, cfg.dataset_revision),
        sources=cfg.sources,
        negative_types=cfg.negative_types,
        max_samples=cfg.max_samples,
    )
    if objective != "sft":
        return ds, describe(cfg.dataset, ds, cfg.split, cfg.dataset_revision)
    rows = as_sft(ds)
    info = describe(cfg.dataset, rows, cfg.split, cfg.dataset_revision)
    info["pairs_before_one_per_unit"] = len(ds)
    return rows, info


def load_model(cfg: TrainConfig, hardware: Hardware) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dtype = torch.bfloat16 if hardware.bf16 else torch.float32
    try:
        model = LlavaForConditionalGeneration.from_pretrained(cfg.model, dtype=dtype)
        processor = AutoProcessor.from_pretrained(cfg.model)
    except OSError as err:
        raise OSError(
            f"cannot load the base model {cfg.model!r}: {err}. Give a llava-hf LLaVA-1.5 id "
            "(llava-hf/llava-1.5-7b-hf) or a directory written by save_pretrained"
        ) from err
    return model, processor


def training_arguments(cfg: TrainConfig, hardware: Hardware) -> dict[str, Any]:
    """The TrainingArguments fields DPOConfig and SFTConfig share; images are never truncated."""
    return {
        "output_dir": cfg.output_dir,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": cfg.weight_decay,
        "bf16": hardware.bf16,
        "activation_checkpointing": hardware.gradient_checkpointing,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "seed": cfg.seed,
        "dataloader_num_workers": hardware.dataloader_num_workers,
        "dataloader_pin_memory": hardware.cuda,
        "use_cpu": hardware.cpu_only,
        "report_to": cfg.report_to,
        "max_length": None,  # truncation would cut the image tokens out of the sequence
    }


def check_output_dir(cfg: TrainConfig) -> None:
    """Refuse to train a new run over a finished or started one, unless resuming it."""
    out = Path(cfg.output_dir)
    if cfg.resume_from_checkpoint is not None or not out.is_dir():
        return
    started = (out / ADAPTER_CONFIG).is_file() or any(out.glob("checkpoint-*"))
    if started:
        raise FileExistsError(
            f"{out} already holds a run (an adapter or checkpoints); pass --resume-from-checkpoint last to "
            "continue it, or choose another --output-dir"
        )


def train(run: Run) -> Trainer:
    """Train (or resume), save adapter + processor, and keep the record next to them."""
    trainer, cfg = run.trainer, run.config
    resume = _resume_argument(cfg)
    record = run_record(run)
    _write_record(trainer, cfg, record)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)  # the adapter (with the projector) and the processor
    trainer.save_state()
    record.update(finished_at=_now(), global_step=trainer.state.global_step, train_loss=result.training_loss)
    _write_record(trainer, cfg, record)
    return trainer


def run_record(run: Run) -> dict[str, Any]:
    """Everything needed to know what was trained: settings with sources, data, LoRA, batch, versions."""
    trainer, cfg = run.trainer, run.config
    args = trainer.args
    peft_config = trainer.model.peft_config["default"]
    trainable, total = trainer.model.get_nb_trainable_parameters()
    settings = cfg.settings(run.objective)
    sources = {name: source_of(run.objective, name) for name in settings}
    return {
        "objective": run.objective,
        "model": cfg.model,
        "settings": settings,
        "sources_of_defaults": {name: source for name, source in sources.items() if source},
        "resolved": {
            "bf16": run.hardware.bf16,
            "gradient_checkpointing": run.hardware.gradient_checkpointing,
            "dataloader_num_workers": run.hardware.dataloader_num_workers,
            "world_size": args.world_size,
            "effective_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "max_length": args.max_length,
        },
        "data": run.data,
        "lora": {
            "r": peft_config.r,
            "alpha": peft_config.lora_alpha,
            "dropout": peft_config.lora_dropout,
            "target_modules": peft_config.target_modules,
            "modules_to_save": sorted(peft_config.modules_to_save or []),
            "trainable_parameters": trainable,
            "all_parameters": total,
        },
        "versions": {"python": platform.python_version(), **_versions()},
        "resumed_from": cfg.resume_from_checkpoint,
        "started_at": _now(),
    }


def _resume_argument(cfg: TrainConfig) -> str | None:
    if cfg.resume_from_checkpoint is None:
        return None
    if cfg.resume_from_checkpoint != "last":
        return cfg.resume_from_checkpoint
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
    if last is None:
        raise FileNotFoundError(
            f"--resume-from-checkpoint last: {cfg.output_dir} holds no checkpoint-* directory; "
            "start without the flag or give a checkpoint path"
        )
    return last


def _write_record(trainer: Trainer, cfg: TrainConfig, record: dict[str, Any]) -> None:
    if trainer.is_world_process_zero():
        path = Path(cfg.output_dir) / RUN_RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def _versions() -> dict[str, str | None]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
