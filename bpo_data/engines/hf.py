"""transformers engines: LLaVA-1.5 answers about an image seen through a view; its LM rewrites text.

One ``LlavaRuntime`` (model + processor) is loaded per shard and shared by the vision and text
engines, so a shard that makes both negative types holds one copy of the weights. Batches use left
padding so every row's generated tokens start at the same position.

Sampling is per row: each request's seed drives its own random stream (``RowSampler``), so an
answer is the same whichever requests it is batched with — a shard count or a batch size never
changes the pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from bpo_data.engines.base import EngineResult, ImageView, TextRequest, VisionRequest
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import SamplingParams

RequestT = TypeVar("RequestT", VisionRequest, TextRequest)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


@dataclass
class LlavaRuntime:
    """A loaded LLaVA checkpoint and its processor, on one device, set up for batched generation."""

    model_id: str
    model: torch.nn.Module
    processor: Any
    device: torch.device

    @classmethod
    def load(cls, model_id: str, device: str = "auto", dtype: str = "auto") -> LlavaRuntime:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        dev = pick_device(device)
        model = LlavaForConditionalGeneration.from_pretrained(model_id, dtype=pick_dtype(dtype, dev))
        return cls.from_loaded(model_id, model.to(dev), AutoProcessor.from_pretrained(model_id))

    @classmethod
    def from_loaded(cls, model_id: str, model: torch.nn.Module, processor: Any) -> LlavaRuntime:
        """Wrap a model already loaded (e.g. base + adapter): eval mode, left padding, a pad token."""
        model.eval()
        processor.tokenizer.padding_side = "left"
        if processor.tokenizer.pad_token is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return cls(model_id=model_id, model=model, processor=processor, device=model.device)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def generate(
        self, inputs: dict, sampling: SamplingParams, seeds: Sequence[int | None]
    ) -> list[EngineResult]:
        """``model.generate`` on a left-padded batch; each row samples from its own seed."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling.temperature > 0:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([RowSampler(sampling, seeds)])
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        return self._decode_new(output, inputs["input_ids"].shape[1], inputs["attention_mask"])

    def _decode_new(self, output: torch.Tensor, prompt_len: int, attention_mask: torch.Tensor):
        results = []
        for row, mask in zip(output, attention_mask):
            new = row[prompt_len:]
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            generated = int((new != self.tokenizer.pad_token_id).sum())
            results.append(
                EngineResult(text=text, prompt_tokens=int(mask.sum()), completion_tokens=generated)
            )
        return results


class RowSampler:
    """Temperature + top-p sampling with one random stream per batch row, as a logits processor.

    ``generate`` samples a whole batch from the global RNG, so a row's answer would depend on the
    rows beside it. Here each row draws from a generator seeded by its own request, and the chosen
    token is returned as the only finite score, so greedy decoding emits exactly that sample.
    """

    def __init__(self, sampling: SamplingParams, seeds: Sequence[int | None]):
        self.temperature = sampling.temperature
        self.top_p = sampling.top_p
        self.generators = [
            torch.Generator().manual_seed(
                seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            )
            for seed in seeds
        ]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # drop a token once the tokens before it already hold top_p of the mass (keep the first)
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        chosen = torch.stack(
            [torch.multinomial(row.cpu(), 1, generator=gen) for row, gen in zip(probs, self.generators)]
        ).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, chosen, 0.0)


def generate_in_groups(
    requests: list[RequestT],
    group_key: Callable[[RequestT], Hashable],
    run: Callable[[list[RequestT]], list[EngineResult]],
) -> list[EngineResult]:
    """One ``model.generate`` per group of requests that share sampling settings; results in input order."""
    groups: dict[Hashable, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(group_key(request), []).append(i)
    results: list[EngineResult | None] = [None] * len(requests)
    for indices in groups.values():
        for i, result in zip(indices, run([requests[i] for i in indices])):
            results[i] = result
    return results  # type: ignore[return-value]


def viewed_pixels(pixel_values: torch.Tensor, views: Sequence[ImageView | None]) -> torch.Tensor:
    """Each image's pixels as its view shows them (before the vision tower)."""
    if all(view is None for view in views):
        return pixel_values
    return torch.stack([px if view is None else view.pixels(px) for px, view in zip(pixel_values, views)])


@contextmanager
def viewed_features(projector: torch.nn.Module, views: Sequence[ImageView | None]) -> Iterator[None]:
    """While inside, each image's selected vision features pass through its view on their way into
    the projector — wherever LLaVA computes them (``generate`` here, ``get_image_features`` for vLLM)."""
    if all(view is None for view in views):
        yield
        return

    def hook(_module, args):
        features = args[0]
        viewed = torch.stack([f if view is None else view.features(f) for f, view in zip(features, views)])
        return (viewed, *args[1:])

    handle = projector.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def projector_of(model: torch.nn.Module) -> torch.nn.Module:
    """LLaVA's multimodal projector (``LlavaForConditionalGeneration`` or its inner ``LlavaModel``)."""
    inner = getattr(model, "model", model)
    return inner.multi_modal_projector


class HFVisionEngine:
    """Answers (image, conversation) batches, each image seen through its request's view."""

    name = "hf"

    def __init__(self, runtime: LlavaRuntime):
        self.runtime = runtime

    def generate(self, requests: list[VisionRequest]) -> list[EngineResult]:
        return generate_in_groups(requests, lambda r: r.sampling.model_dump_json(), self._generate_group)

    def _generate_group(self, requests: list[VisionRequest]) -> list[EngineResult]:
        rt = self.runtime
        views = [r.view for r in requests]
        inputs = rt.processor(
            images=[r.image for r in requests],
            text=[llava_prompt(r.messages) for r in requests],
            padding=True,
            return_tensors="pt",
        ).to(rt.device)
        inputs["pixel_values"] = viewed_pixels(inputs["pixel_values"].to(rt.model.dtype), views)
        with viewed_features(projector_of(rt.model), views):
            return rt.generate(inputs, requests[0].sampling, [r.seed for r in requests])

    def close(self) -> None:
        self.runtime = None  # type: ignore[assignment]


class HFTextEngine:
    """Text-only generation with the MLLM's own language model (the paper's injector)."""

    name = "hf"

    def __init__(self, runtime: LlavaRuntime):
        self.runtime = runtime

    def generate(self, requests: list[TextRequest]) -> list[EngineResult]:
        return generate_in_groups(requests, lambda r: r.sampling.model_dump_json(), self._generate_group)

    def _generate_group(self, requests: list[TextRequest]) -> list[EngineResult]:
        rt = self.runtime
        prompts = [llava_prompt(r.messages, with_image=False) for r in requests]
        inputs = rt.tokenizer(prompts, padding=True, return_tensors="pt").to(rt.device)
        return rt.generate(inputs, requests[0].sampling, [r.seed for r in requests])

    def close(self) -> None:
        self.runtime = None  # type: ignore[assignment]
