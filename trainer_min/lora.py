"""The LoRA of the paper: every linear layer of the language model, never the vision tower; projector trained.

CLIP's attention layers are also called ``q_proj``/``k_proj``/``v_proj``, so target names alone would put
LoRA into the vision tower. The target is a regex over full module names under the language model, built
by walking the model, which is what the authors' ``find_all_linear_names`` meant (it skipped the vision
tower, the projector and ``lm_head``). The projector is trained in full through ``modules_to_save``, as
the authors' script did (``mm_projector_lr``), unless it is frozen.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import LoraConfig
    from torch import nn
    from trl import ModelConfig

PROJECTOR = "multi_modal_projector"


def language_model_targets(model: nn.Module) -> str:
    """A regex matching exactly the ``nn.Linear`` modules under the model's language model."""
    from torch import nn

    language_model = model.get_decoder()  # the text decoder, without the vision tower and projector
    prefix = next(name for name, module in model.named_modules() if module is language_model)
    leaf_names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in language_model.named_modules()
            if isinstance(module, nn.Linear)
        }
    )
    if not leaf_names:
        raise ValueError(f"{type(model).__name__}.{prefix} has no linear layers to put LoRA on")
    return rf"{re.escape(prefix)}\..*\.({'|'.join(leaf_names)})"


def lora_config(model_args: ModelConfig, model: nn.Module, freeze_projector: bool = False) -> LoraConfig:
    """TRL's LoRA settings; the paper's targets when none are given; the projector trained unless frozen."""
    from peft import LoraConfig

    modules_to_save = list(model_args.lora_modules_to_save or [])
    if not freeze_projector and PROJECTOR not in modules_to_save:
        modules_to_save.append(PROJECTOR)
    optional = {}
    if model_args.lora_target_parameters is not None:
        optional["target_parameters"] = model_args.lora_target_parameters
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or language_model_targets(model),
        modules_to_save=modules_to_save or None,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        task_type=model_args.lora_task_type,
        **optional,
    )


def upcast_trainable(model: nn.Module) -> None:
    """Keep trainable weights in float32 under bf16.

    PEFT upcasts the LoRA matrices but not the ``modules_to_save`` copy of the projector; a bf16 weight
    cannot take updates of lr 2e-6 (they round away), so the projector would silently stay frozen.
    Autocast still runs its matmuls in bf16. DeepSpeed keeps its own fp32 master copy either way.
    """
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
