"""The DDPM forward process that weakens the model's view of the image.

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
    if spec.step >= spec.steps_total:
        raise ValueError(f"noise step {spec.step} is outside the schedule of {spec.steps_total} steps")
    return float(alphas_cumprod(spec.schedule, spec.steps_total)[spec.step].sqrt())


def noise_in(noise: NoiseSpec | None, space: str) -> bool:
    """Whether a request's noise acts in this space (``pixel`` or ``features``); step 0 is no noise."""
    return noise is not None and noise.step > 0 and noise.space == space


def add_noise(x: torch.Tensor, spec: NoiseSpec, seed: int) -> torch.Tensor:
    """Noise one tensor (an image's pixels or features); the draw is fixed by ``seed``."""
    if spec.step == 0:
        return x
    weight = signal_weight(spec)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    eps = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return x * weight + eps * (1.0 - weight**2) ** 0.5
