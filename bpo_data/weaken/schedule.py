"""The DDPM forward process: how much of the clean image survives at a noise step.

``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1−ᾱ_t)·ε`` with T steps of a sigmoid (default) or linear β schedule,
indexed like the authors' code (step t uses ᾱ of the first t+1 betas), except that step 0 means
*no noise at all*: the paper's "self-generated" ablation samples from the clean image.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from bpo_data.recipe import NoiseSpec


@lru_cache(maxsize=8)
def alphas_cumprod(schedule: str, steps_total: int) -> torch.Tensor:
    if schedule == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, steps_total, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    elif schedule == "linear":
        betas = torch.linspace(1e-4, 2e-2, steps_total, dtype=torch.float64)
    else:
        raise ValueError(f"unknown noise schedule {schedule!r}: use 'sigmoid' or 'linear'")
    return torch.cumprod(1.0 - betas, dim=0)


def signal_weight(spec: NoiseSpec) -> float:
    """sqrt(ᾱ_t): how much of the clean image survives at this step (1.0 at step 0)."""
    if spec.step == 0:
        return 1.0
    return float(alphas_cumprod(spec.schedule, spec.steps_total)[spec.step].sqrt())
