"""The two engine interfaces every backend implements.

Engines never raise for one bad request: a failure comes back as ``EngineResult.error`` so the
caller can write a reject for that unit and carry on with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from bpo_data.recipe import NoiseSpec, SamplingParams


@dataclass
class EngineResult:
    text: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class TextRequest:
    """Chat messages (``role``/``content`` strings) for a text-only model."""

    messages: list[dict[str, str]]
    sampling: SamplingParams
    seed: int | None = None


@dataclass
class VisionRequest:
    """One image and the conversation about it (plain-string messages, last one from the user).

    ``noise_seed`` fixes the noise draw so a rerun weakens the image the same way.
    """

    image: Image.Image
    messages: list[dict[str, str]]
    sampling: SamplingParams
    noise: NoiseSpec | None = None
    noise_seed: int = 0
    extra: dict = field(default_factory=dict)


class TextEngine(Protocol):
    name: str

    def generate(self, requests: list[TextRequest]) -> list[EngineResult]: ...

    def close(self) -> None: ...


class VisionEngine(Protocol):
    name: str

    def generate(self, requests: list[VisionRequest]) -> list[EngineResult]: ...

    def close(self) -> None: ...
