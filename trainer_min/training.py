"""What a DPO run and an SFT run share: data, model, LoRA, the TRL trainer, outputs, the run record.

The objectives live in ``dpo.py`` and ``sft.py`` and are stock TRL trainers with TRL's own configs; this
module builds either one (:func:`build`, given the objective's trainer class) and writes what a later reader
needs next to the adapter: the processor, ``training_config.json`` (every setting, where each default comes
from, the exact data, the software versions) and the per-step log-probs (``logprobs.csv``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo_data.versions import installed
from trainer_min.card import write_model_card
from trainer_min.data import DataError, as_sft, describe, load_pairs, select_pairs
from trainer_min.hub import ModelSourceError, check_dataset, check_model
from trainer_min.load import ADAPTER_CONFIG, RUN_RECORD
from trainer_min.lora import lora_config, upcast_trainable

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import (
        LlavaForConditionalGeneration,
        ProcessorMixin,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from trl import ModelConfig

    from trainer_min.config import BPOScriptArguments

# pip names of the trackers whose package is not called like the tracker
TRACKER_PACKAGES = {"azure_ml": "azureml-core", "flyte": "flytekit"}
PACKAGES = ("bpo-data", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")


@dataclass
class Run:
    """A trainer ready to train, with the settings it was built from and what its record needs."""

    trainer: Trainer
    objective: str
    script_args: BPOScriptArguments
    training_args: TrainingArguments
    model_args: ModelConfig
    data: dict[str, Any]
    resume_from: str | None  # the checkpoint directory to continue from, if resuming


def build(
    objective: str,
    trainer_class: type[Trainer],
    script_args: BPOScriptArguments,
    training_args: TrainingArguments,
    model_args: ModelConfig,
    callbacks: Sequence[TrainerCallback] = (),
) -> Run:
    """A TRL trainer for ``objective`` over the selected pairs, with the LoRA applied, ready to train.

    Checks that need no model come first, cheapest first: the run directory, the checkpoint to resume, the
    trackers, the model and dataset ids (one Hub request each at most), then the data and its filters.
    """
    from trainer_min.logprobs import LogProbLogger

    check_output_dir(training_args.output_dir, training_args.resume_from_checkpoint)
    resume_from = resolve_checkpoint(training_args)
    check_report_to(training_args.report_to)
    check_eval_split(script_args, training_args)
    check_model(model_args.model_name_or_path, "--model-name-or-path", model_args.model_revision)
    check_dataset(script_args.dataset, "--dataset", script_args.dataset_revision)
    train_dataset, eval_dataset, data = prepare_data(objective, script_args, training_args)
    model, processor = load_model(model_args, training_args)
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=lora_config(model_args, model, freeze_projector=script_args.freeze_projector),
        callbacks=[LogProbLogger(training_args.output_dir, objective), *callbacks],
    )
    upcast_trainable(trainer.model)
    return Run(trainer, objective, script_args, training_args, model_args, data, resume_from)


def prepare_data(
    objective: str, script_args: BPOScriptArguments, training_args: TrainingArguments
) -> tuple[Dataset, Dataset | None, dict[str, Any]]:
    """The selected pairs (prompt-completion rows for SFT), the eval split if asked, and their description."""
    strategy = _eval_strategy(training_args)

    def pick(split: str, max_samples: int | None) -> tuple[Dataset, dict[str, Any]]:
        pairs = select_pairs(
            load_pairs(script_args.dataset, split, script_args.dataset_revision),
            sources=script_args.sources,
            negative_types=script_args.negative_types,
            max_samples=max_samples,
        )
        rows = as_sft(pairs) if objective == "sft" else pairs
        described = describe(script_args.dataset, rows, split, script_args.dataset_revision)
        if objective == "sft":
            described["pairs_before_one_per_unit"] = len(pairs)
        return rows, described

    train_rows, info = pick(script_args.split, script_args.max_samples)
    if strategy == "no":
        return train_rows, None, info
    eval_rows, info["eval"] = pick(script_args.eval_split, None)
    return train_rows, eval_rows, info


def _eval_strategy(training_args: TrainingArguments) -> str:
    return getattr(training_args.eval_strategy, "value", training_args.eval_strategy)


def check_eval_split(script_args: BPOScriptArguments, training_args: TrainingArguments) -> None:
    strategy = _eval_strategy(training_args)
    if strategy != "no" and script_args.eval_split is None:
        raise DataError(
            f"--eval-strategy {strategy} needs --eval-split, the split of --dataset to evaluate on "
            "(or leave --eval-strategy at no)"
        )


def weights_dtype(model_args: ModelConfig, training_args: TrainingArguments) -> str:
    """--dtype, else bfloat16 under --bf16 (as the authors trained), else float32."""
    return model_args.dtype or ("bfloat16" if training_args.bf16 else "float32")


def load_model(
    model_args: ModelConfig, training_args: TrainingArguments
) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """The base LLaVA in --dtype (default: bfloat16 under --bf16, else float32) and its processor."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    dtype = weights_dtype(model_args, training_args)
    name = model_args.model_name_or_path
    try:
        model = LlavaForConditionalGeneration.from_pretrained(
            name,
            revision=model_args.model_revision,
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
            attn_implementation=model_args.attn_implementation,
        )
        processor = AutoProcessor.from_pretrained(name, revision=model_args.model_revision)
    except OSError as err:
        raise ModelSourceError(
            f"--model-name-or-path {name}: cannot load it as a LLaVA model ({err}); give a LLaVA-1.5 "
            "checkpoint: a llava-hf Hub id or a folder written by save_pretrained"
        ) from err
    return model, processor


def check_output_dir(output_dir: str, resume_from_checkpoint: str | None) -> None:
    """Refuse to train a new run over a finished or started one, unless resuming it."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output-dir {out} is a file; choose a folder")
    if resume_from_checkpoint is not None or not out.is_dir():
        return
    if (out / ADAPTER_CONFIG).is_file() or any(out.glob("checkpoint-*")):
        raise FileExistsError(
            f"--output-dir {out} already holds a run (an adapter or checkpoints); add "
            "--resume-from-checkpoint last to continue it, or choose another --output-dir"
        )


def check_report_to(report_to: Sequence[str] | None) -> None:
    """Every tracker of --report-to is installed (transformers would say so only after the model loaded)."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    from trainer_min.config import UsageError

    available = set(get_available_reporting_integrations())
    for name in report_to or ():
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(INTEGRATION_TO_CALLBACK)
            raise UsageError(f"--report-to {name}: unknown tracker; choose from none, all, {known}")
        if name not in available:
            package = TRACKER_PACKAGES.get(name, name)
            raise UsageError(
                f"--report-to {name}: {package} is not installed; pip install {package} (or --report-to none)"
            )


def resolve_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint directory ``--resume-from-checkpoint`` names; ``last`` is the newest in --output-dir."""
    wanted = training_args.resume_from_checkpoint
    if wanted is None:
        return None
    if wanted != "last":
        if not Path(wanted).is_dir():
            raise FileNotFoundError(f"--resume-from-checkpoint {wanted}: no such checkpoint directory")
        return wanted
    from transformers.trainer_utils import get_last_checkpoint

    out = training_args.output_dir
    last = get_last_checkpoint(out) if Path(out).is_dir() else None
    if last is None:
        raise FileNotFoundError(
            f"--resume-from-checkpoint last: {out} holds no checkpoint-* directory; "
            "start without the flag or give a checkpoint path"
        )
    return last


def train(run: Run) -> Trainer:
    """Train (or resume), save adapter + processor, and keep the record next to them."""
    trainer, out = run.trainer, run.training_args.output_dir
    record = run_record(run)
    _write_record(trainer, out, record)
    result = trainer.train(resume_from_checkpoint=run.resume_from)
    trainer.save_model(out)  # the adapter (with the projector) and the processor
    trainer.save_state()
    record.update(finished_at=_now(), global_step=trainer.state.global_step, train_loss=result.training_loss)
    _write_record(trainer, out, record)
    if trainer.is_world_process_zero():
        write_model_card(out, json.loads(json.dumps(record, default=str)))  # replaces TRL's card
    return trainer


def run_record(run: Run) -> dict[str, Any]:
    """Everything needed to know what was trained: settings with sources, data, LoRA, batch, versions."""
    from trainer_min.config import default_sources

    trainer, args = run.trainer, run.training_args
    peft_config = trainer.model.peft_config["default"]
    trainable, total = trainer.model.get_nb_trainable_parameters()
    configs = (run.script_args, args, run.model_args)
    return {
        "objective": run.objective,
        "model": run.model_args.model_name_or_path,
        "script_arguments": asdict(run.script_args),
        "training_arguments": args.to_dict(),
        "model_config": asdict(run.model_args),
        "sources_of_defaults": default_sources(*(type(config) for config in configs)),
        "resolved": {
            "bf16": args.bf16,
            "gradient_checkpointing": args.gradient_checkpointing,
            "dataloader_num_workers": args.dataloader_num_workers,
            "use_cpu": args.use_cpu,
            "world_size": args.world_size,
            "effective_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "max_length": args.max_length,
            "dtype": weights_dtype(run.model_args, args),
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
        "versions": installed(PACKAGES),
        "resumed_from": run.resume_from,
        "started_at": _now(),
    }


def _write_record(trainer: Trainer, out: str, record: dict[str, Any]) -> None:
    if trainer.is_world_process_zero():
        path = Path(out) / RUN_RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
