"""transformers engines: LLaVA-1.5 answers with a weakened image, and its language model rewrites text.

One ``LlavaRuntime`` (model + processor) is loaded per shard and shared by the vision and text
engines, so a shard that makes both negative types holds one copy of the weights. Batches use left
padding so every row's generated tokens start at the same position.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

from bpo_data.engines.base import EngineResult, TextRequest, VisionRequest
from bpo_data.negatives.noise import add_noise, noise_in
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import NoiseSpec, SamplingParams

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
    """A loaded LLaVA checkpoint and its processor, on one device."""

    model_id: str
    model: torch.nn.Module
    processor: object
    device: torch.device

    @classmethod
    def load(cls, model_id: str, device: str = "auto", dtype: str = "auto") -> LlavaRuntime:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        dev = pick_device(device)
        model = LlavaForConditionalGeneration.from_pretrained(model_id, dtype=pick_dtype(dtype, dev))
        model.to(dev).eval()
        processor = AutoProcessor.from_pretrained(model_id)
        processor.tokenizer.padding_side = "left"
        if processor.tokenizer.pad_token is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return cls(model_id=model_id, model=model, processor=processor, device=dev)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def generation_kwargs(self, sampling: SamplingParams) -> dict:
        sample = sampling.temperature > 0
        kwargs = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def decode_new(self, output: torch.Tensor, prompt_len: int, attention_mask: torch.Tensor):
        results = []
        for row, mask in zip(output, attention_mask):
            new = row[prompt_len:]
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            generated = int((new != self.tokenizer.pad_token_id).sum())
            results.append(
                EngineResult(text=text, prompt_tokens=int(mask.sum()), completion_tokens=generated)
            )
        return results


def generate_in_groups(
    requests: list[RequestT],
    group_key: Callable[[RequestT], Hashable],
    run: Callable[[list[RequestT]], list[EngineResult]],
) -> list[EngineResult]:
    """One ``model.generate`` per group of requests that share generation settings; results in input order.

    ``generate`` takes one set of sampling parameters (and one noise spec) per call, so a mixed batch
    is split, and the answers are put back where their requests were.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(group_key(request), []).append(i)
    results: list[EngineResult | None] = [None] * len(requests)
    for indices in groups.values():
        for i, result in zip(indices, run([requests[i] for i in indices])):
            results[i] = result
    return results  # type: ignore[return-value]


def _batch_seed(seeds: list[int]) -> int:
    digest = hashlib.blake2b(",".join(map(str, seeds)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


class HFVisionEngine:
    """Answers (image, conversation) batches; the image can be weakened in pixel or feature space."""

    name = "hf"

    def __init__(self, runtime: LlavaRuntime):
        self.runtime = runtime

    def generate(self, requests: list[VisionRequest]) -> list[EngineResult]:
        return generate_in_groups(
            requests, lambda r: (r.sampling.model_dump_json(), _noise_key(r.noise)), self._generate_group
        )

    def _generate_group(self, requests: list[VisionRequest]) -> list[EngineResult]:
        rt = self.runtime
        noise = requests[0].noise
        seeds = [r.noise_seed for r in requests]
        inputs = rt.processor(
            images=[r.image for r in requests],
            text=[llava_prompt(r.messages) for r in requests],
            padding=True,
            return_tensors="pt",
        ).to(rt.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(rt.model.dtype)
        if noise_in(noise, "pixel"):
            inputs["pixel_values"] = torch.stack(
                [add_noise(px, noise, seed) for px, seed in zip(inputs["pixel_values"], seeds)]
            )
        torch.manual_seed(_batch_seed(seeds))
        with torch.inference_mode(), self._feature_noise(noise, seeds):
            output = rt.model.generate(**inputs, **rt.generation_kwargs(requests[0].sampling))
        return rt.decode_new(output, inputs["input_ids"].shape[1], inputs["attention_mask"])

    @contextmanager
    def _feature_noise(self, noise: NoiseSpec | None, seeds: list[int]) -> Iterator[None]:
        """Noise the vision features on their way into the projector (the paper's feature space)."""
        if not noise_in(noise, "features"):
            yield
            return

        def hook(_module, args):
            features = args[0]
            noisy = torch.stack([add_noise(f, noise, seed) for f, seed in zip(features, seeds)])
            return (noisy, *args[1:])

        handle = self.runtime.model.model.multi_modal_projector.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def close(self) -> None:
        self.runtime = None  # type: ignore[assignment]


def _noise_key(noise: NoiseSpec | None) -> str:
    return noise.model_dump_json() if noise is not None else ""


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
        torch.manual_seed(_batch_seed([r.seed or 0 for r in requests]))
        with torch.inference_mode():
            output = rt.model.generate(**inputs, **rt.generation_kwargs(requests[0].sampling))
        return rt.decode_new(output, inputs["input_ids"].shape[1], inputs["attention_mask"])

    def close(self) -> None:
        self.runtime = None  # type: ignore[assignment]
