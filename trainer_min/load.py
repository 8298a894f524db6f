"""Load a trained adapter for evaluation, wherever it was moved and whatever its directory is called.

The base model is read from the files the run wrote (``training_config.json``'s ``model``, else PEFT's
``adapter_config.json`` ``base_model_name_or_path``), never guessed from a path; the processor comes
from the adapter directory, where training saved it, else from the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer_min.errors import InputError, one_line
from trainer_min.hub import ModelSourceError

if TYPE_CHECKING:
    from transformers import LlavaForConditionalGeneration, ProcessorMixin

ADAPTER_CONFIG = "adapter_config.json"
RUN_RECORD = "training_config.json"
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def base_model_of(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, from the files next to it."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        hint = (
            " it holds a full model (config.json): pass it as the model, not the adapter"
            if (adapter_dir / "config.json").is_file()
            else " give the --output-dir of a `bpo-train dpo|sft` run or one of its checkpoint-* directories"
        )
        raise FileNotFoundError(f"{adapter_dir} has no {ADAPTER_CONFIG};{hint}")
    record_path = adapter_dir / RUN_RECORD
    if record_path.is_file():
        model = json.loads(record_path.read_text(encoding="utf-8")).get("model")
        if model:
            return model
    model = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not model:
        raise InputError(f"{config_path} names no base_model_name_or_path; pass the base model explicitly")
    return model


class DeviceError(InputError):
    """A device this machine (or this PyTorch build) does not have."""


def resolve_device(device: str | None, flag: str = "--device") -> str:
    """``auto`` (or None): CUDA when there is a GPU, else CPU; a named device must exist here."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        hint = " (did you mean cuda?)" if device.lower().startswith("gpu") else ""
        raise DeviceError(
            f"{flag} {device}: not a device name{hint}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this PyTorch build ({torch.__version__}) has no CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise DeviceError(f"{flag} {device}: {why}; use {flag} cpu (or auto)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"{flag} {device}: MPS (Apple GPU) is not available here; use {flag} cpu")
    elif parsed.type != "cpu":
        raise DeviceError(f"{flag} {device}: answers run on auto, cpu, cuda, cuda:N or mps")
    return str(parsed)


def load_for_eval(
    model_id: str | None,
    adapter_dir: str | Path | None,
    *,
    dtype: str = "auto",
    device: str | None = None,
    merge: bool = True,
) -> tuple[Any, ProcessorMixin]:
    """(model in eval mode, processor) for a base model, an adapter on it, or both.

    ``model_id`` None takes the base from the adapter's files; given, it overrides them (a base that
    moved). ``merge`` folds the LoRA into the weights (faster generation, same answers); without it
    the result is a ``PeftModel``. ``dtype`` is one of auto (the checkpoint's), float32, bfloat16,
    float16; ``device`` (auto, cpu, cuda, cuda:N, mps) defaults to CUDA when there is one.
    """
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if model_id is None and adapter_dir is None:
        raise InputError("load_for_eval needs a base model id, an adapter directory, or both")
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    target = resolve_device(device)
    adapter_base = base_model_of(adapter_dir) if adapter_dir is not None else None
    base = model_id or adapter_base
    try:
        model: LlavaForConditionalGeneration = LlavaForConditionalGeneration.from_pretrained(
            base, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
        )
        processor_dir = base
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir))
            if merge:
                model = model.merge_and_unload()
            if any((Path(adapter_dir) / name).is_file() for name in PROCESSOR_FILES):
                processor_dir = str(adapter_dir)
        processor = AutoProcessor.from_pretrained(processor_dir)
    except (OSError, ValueError) as err:  # transformers' and PEFT's words for files that are not a model
        if isinstance(err, (FileNotFoundError, InputError)):
            raise
        what = f"{base} with the adapter {adapter_dir}" if adapter_dir is not None else base
        raise ModelSourceError(
            f"cannot load {what} as a LLaVA model ({one_line(str(err))}); give a LLaVA-1.5 checkpoint "
            "(a llava-hf Hub id or a folder written by save_pretrained) and an adapter trained on it"
        ) from err
    model.to(target)
    return model.eval(), processor
