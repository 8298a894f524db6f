"""The two engine interfaces every backend implements, and the requests they answer.

Engines answer requests and know no method: a vision request may carry an ``ImageView`` that
changes what the model sees of its image (image weakening passes a noisy one), and every engine
applies it at the same two points of LLaVA's image path without knowing what it does.

Engines never raise for one bad request: a failure comes back as ``EngineResult.error`` so the
caller can write a reject for that unit and carry on with the batch.

Engines that serve requests concurrently (an OpenAI-compatible server, vLLM's scheduler) also take
them one at a time (``StreamingEngine.submit``): the pipeline then keeps ``in_flight`` requests
going all the time instead of waiting for the slowest request of each batch.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from bpo_data.recipe import SamplingParams

if TYPE_CHECKING:
    import torch


@dataclass
class EngineResult:
    text: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ImageView(Protocol):
    """A change to what the model sees of one image, applied by the engine at two points.

    ``pixels`` gets the image's normalised pixel tensor (C, H, W) before the vision tower,
    ``features`` its selected vision features (tokens, dim) before the projector. ``key`` names
    the change (None when there is none), so caches keyed by content never serve another view.
    """

    key: str | None

    def pixels(self, x: torch.Tensor) -> torch.Tensor: ...

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TextRequest:
    """Chat messages (``role``/``content`` strings) for a text-only model.

    ``seed`` fixes a sampled answer so it does not depend on what it is batched with.
    """

    messages: list[dict[str, str]]
    sampling: SamplingParams
    seed: int | None = None


@dataclass
class VisionRequest:
    """One image and the conversation about it (plain-string messages, last one from the user).

    ``view`` changes what the model sees of the image (None: the image as it is); ``seed`` fixes a
    sampled answer so it does not depend on what it is batched with.
    """

    image: Image.Image
    messages: list[dict[str, str]]
    sampling: SamplingParams
    view: ImageView | None = None
    seed: int | None = None


class TextEngine(Protocol):
    name: str

    def generate(self, requests: list[TextRequest]) -> list[EngineResult]: ...

    def close(self) -> None: ...


class VisionEngine(Protocol):
    name: str

    def generate(self, requests: list[VisionRequest]) -> list[EngineResult]: ...

    def close(self) -> None: ...


class StreamingEngine(Protocol):
    """An engine that answers requests one at a time, many at once.

    ``submit`` returns at once; the future resolves to the request's result (an ``EngineResult``
    with ``error`` set when that request failed). ``in_flight`` is how many submitted requests the
    engine wants outstanding to stay busy: a caller that keeps that many submitted never lets it idle.
    """

    in_flight: int

    def submit(self, request: TextRequest | VisionRequest) -> Future[EngineResult]: ...


def streams(engine: object) -> int:
    """How many requests ``engine`` wants in flight, or 0 when it only answers whole batches."""
    return int(getattr(engine, "in_flight", 0) or 0) if callable(getattr(engine, "submit", None)) else 0
