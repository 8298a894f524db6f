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

    from trainer_min.config import TrainConfig

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


def lora_config(cfg: TrainConfig, model: nn.Module) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=language_model_targets(model),
        modules_to_save=None if cfg.freeze_projector else [PROJECTOR],
        task_type="CAUSAL_LM",
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
