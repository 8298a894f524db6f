"""What the weakened model sees: one image's pixels or vision features, with DDPM noise added.

The paper weakens the image so that the model's language prior shows through its answer. The
noise acts in one of two places of LLaVA's image path::

    pixels ──► vision tower ──► features ──► projector ──► image tokens ──► language model
      ▲ space: pixel (the authors' code)       ▲ space: features (the paper's text)

Engines know nothing of noise: they call ``view.pixels`` on each image's normalised pixel tensor
before the tower and ``view.features`` on its selected features before the projector, and a
``NoisyView`` changes the one its spec names. Each draw is fixed by the unit's seed, so a rerun,
another engine or another batch weakens the image exactly the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bpo_data.recipe import NoiseSpec
from bpo_data.weaken.schedule import signal_weight


def add_noise(x: torch.Tensor, spec: NoiseSpec, seed: int) -> torch.Tensor:
    """``sqrt(ᾱ_t)·x + sqrt(1−ᾱ_t)·ε`` with ε drawn on the CPU from ``seed`` (the same on any device)."""
    if spec.step == 0:
        return x
    weight = signal_weight(spec)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    eps = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return x * weight + eps * (1.0 - weight**2) ** 0.5


@dataclass(frozen=True)
class NoisyView:
    """One noise draw on one image, in the space its spec names; step 0 leaves the image as it is."""

    spec: NoiseSpec
    seed: int

    def _acts_in(self, space: str) -> bool:
        return self.spec.step > 0 and self.spec.space == space

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return add_noise(x, self.spec, self.seed) if self._acts_in("pixel") else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return add_noise(x, self.spec, self.seed) if self._acts_in("features") else x

    @property
    def key(self) -> str | None:
        """Identifies this draw (None when it changes nothing): caches must not share noisy inputs."""
        if self.spec.step == 0:
            return None
        return f"{self.spec.model_dump_json()}:seed={self.seed}"
