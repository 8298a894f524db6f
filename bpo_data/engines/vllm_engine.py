"""vLLM engines: LLaVA-1.5 answers from image embeddings, and its language model rewrites text.

vLLM cannot change an image in the middle of its own vision tower, so the shard computes the image
embeddings itself with the HF vision tower + projector of the same checkpoint (``ImageEmbedder``,
which runs transformers' own ``LlavaModel.get_image_features``), applying each request's view
where the hf engine applies it (``viewed_pixels``, ``viewed_features``), and hands vLLM the
projector output as image embeddings (``LLM(enable_mm_embeds=True)``).

vLLM keys its encoder, processor and prefix caches by each multimodal item's uuid (by default a
hash of its content). Every view gets its own uuid (``view_uuid``), so a cached clean image or
another noise draw of the same image is never reused for this one.

Everything up to the vLLM call runs without vLLM (``build_vision_requests``,
``sampling_kwargs``, ``text_prompt``); only ``VllmRuntime.load`` and ``to_vllm_sampling`` import it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from bpo_data.engines.base import EngineResult, ImageView, TextRequest, VisionRequest
from bpo_data.engines.hf import pick_device, pick_dtype, projector_of, viewed_features, viewed_pixels
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import SamplingParams, VllmSpec

if TYPE_CHECKING:
    import vllm

_VLLM_MISSING = (
    "engine 'vllm' needs vLLM 0.11.1 or later (image embeddings need its enable_mm_embeds), which runs "
    "on CUDA GPUs: pip install 'bpo-data[vllm]' on the GPU machine, or set the recipe's run.weaken.engine / "
    "run.inject.engine to 'hf' (--weaken-engine / --inject-engine hf)"
)
_TOWER_PREFIXES = ("model.vision_tower.", "vision_tower.")
_PROJECTOR_PREFIXES = ("model.multi_modal_projector.", "multi_modal_projector.")


def _tower_key(name: str) -> str:
    """A vision-tower weight name without the layout prefixes transformers versions differ by.

    Hub checkpoints say ``vision_tower.vision_model.X``, transformers 4.5x saves
    ``model.vision_tower.vision_model.X``, transformers 5 saves ``vision_tower.X``; all are ``X``.
    """
    return name.removeprefix("vision_model.")


class ImageEmbedder:
    """The HF vision tower + projector of a LLaVA checkpoint: images in, image embeddings out.

    A ``LlavaModel`` whose language model stays on the meta device (it is vLLM's to hold): only the
    tower and projector are materialised (0.32B parameters for LLaVA-1.5-7B: 0.65 GB in bf16), from
    the checkpoint's safetensors, and transformers' own ``get_image_features`` selects the features.
    """

    def __init__(self, llava: torch.nn.Module, image_processor: Any, chunk_size: int = 16):
        self.llava = llava.eval()
        self.config = llava.config
        self.image_processor = image_processor
        # The tower returns every layer's hidden states; chunks bound that memory next to vLLM.
        self.chunk_size = chunk_size

    @property
    def vision_tower(self) -> torch.nn.Module:
        return self.llava.vision_tower

    @property
    def projector(self) -> torch.nn.Module:
        return projector_of(self.llava)

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    @classmethod
    def from_config(
        cls, config: Any, image_processor: Any, device: torch.device, dtype: torch.dtype
    ) -> ImageEmbedder:
        """Randomly initialised tower and projector, as ``LlavaModel`` builds them (tests, benchmarks)."""
        from transformers import AutoModel, LlavaModel
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        with torch.device("meta"):
            llava = LlavaModel(config)
        with torch.device(device):
            llava.vision_tower = AutoModel.from_config(config.vision_config).to(dtype)
            llava.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
        return cls(llava, image_processor)

    @classmethod
    def from_pretrained(cls, model_id: str, device: torch.device, dtype: torch.dtype) -> ImageEmbedder:
        from transformers import AutoConfig, AutoProcessor

        config = AutoConfig.from_pretrained(model_id)
        # The processor's own image processor: the hf engine makes its pixel values with it too.
        embedder = cls.from_config(
            config, AutoProcessor.from_pretrained(model_id).image_processor, device, dtype
        )
        weights = _load_vision_weights(model_id)
        for module, prefixes, normalise in (
            (embedder.vision_tower, _TOWER_PREFIXES, _tower_key),
            (embedder.projector, _PROJECTOR_PREFIXES, str),
        ):
            module.load_state_dict(_weights_for(module, weights, prefixes, normalise, model_id))
        return embedder

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image], views: Sequence[ImageView | None]) -> list[torch.Tensor]:
        """One (num_image_tokens, hidden) tensor per image, each seen through its view."""
        out: list[torch.Tensor] = []
        for start in range(0, len(images), self.chunk_size):
            end = start + self.chunk_size
            out.extend(self._embed_chunk(images[start:end], views[start:end]))
        return out

    def _embed_chunk(self, images, views) -> list[torch.Tensor]:
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = viewed_pixels(pixels.to(device=self.device, dtype=self.dtype), views)
        with viewed_features(self.projector, views):
            features = self.llava.get_image_features(
                pixel_values=pixels,
                vision_feature_layer=self.config.vision_feature_layer,
                vision_feature_select_strategy=self.config.vision_feature_select_strategy,
            )
        # transformers 5 returns an output object whose pooler_output is the per-image list
        features = getattr(features, "pooler_output", features)
        return list(features)


def _weights_for(
    module: torch.nn.Module,
    weights: dict[str, torch.Tensor],
    prefixes: tuple[str, ...],
    normalise: Callable[[str], str],
    model_id: str,
) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of ``module``, matched by name once the layout prefixes are removed."""
    wanted = {normalise(name): name for name in module.state_dict()}
    found = {}
    for key, tensor in weights.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        name = wanted.get(normalise(key[len(prefix) :])) if prefix is not None else None
        if name is not None:
            found[name] = tensor
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise ValueError(
            f"{model_id}: the checkpoint has no weights for {prefixes[1]}{{{', '.join(missing[:4])}"
            f"{', …' if len(missing) > 4 else ''}}}; the vllm engine needs a LLaVA checkpoint in "
            "safetensors with its vision tower and projector (e.g. llava-hf/llava-1.5-7b-hf)"
        )
    return found


def _load_vision_weights(model_id: str) -> dict[str, torch.Tensor]:
    """Only the vision tower and projector tensors of a checkpoint (a local folder or a hub id)."""
    from safetensors import safe_open

    index_name, single_name = "model.safetensors.index.json", "model.safetensors"
    index = _checkpoint_file(model_id, index_name)
    if index is not None:
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    else:
        single = _checkpoint_file(model_id, single_name)
        if single is None:
            raise FileNotFoundError(
                f"{model_id}: neither {index_name} nor {single_name} found; the vllm engine reads the "
                "vision tower from safetensors weights (convert the checkpoint with save_pretrained)"
            )
        with safe_open(str(single), "pt") as handle:
            weight_map = {key: single_name for key in handle.keys()}
    prefixes = _TOWER_PREFIXES + _PROJECTOR_PREFIXES
    by_file: dict[str, list[str]] = {}
    for key, filename in weight_map.items():
        if key.startswith(prefixes):
            by_file.setdefault(filename, []).append(key)
    weights: dict[str, torch.Tensor] = {}
    for filename, keys in by_file.items():
        with safe_open(str(_checkpoint_file(model_id, filename, required=True)), "pt") as handle:
            weights.update({key: handle.get_tensor(key) for key in keys})
    return weights


def _checkpoint_file(model_id: str, filename: str, required: bool = False) -> Path | None:
    if os.path.isdir(model_id):
        path = Path(model_id) / filename
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"{path} is named in the checkpoint's index but missing")
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(model_id, filename))
    except EntryNotFoundError:
        if required:
            raise
        return None


def _image_digest(image: Image.Image) -> bytes:
    hasher = hashlib.sha256()
    hasher.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    hasher.update(image.tobytes())
    return hasher.digest()


def view_uuid(image: Image.Image, view: ImageView | None) -> str:
    """The multimodal uuid of an image as a view shows it: same image and view → same uuid, else different.

    An unchanged image (no view, or a view that changes nothing) gets the uuid of its pixels alone:
    every such request has the same embeddings, so sharing vLLM's caches between them is correct.
    """
    digest = _image_digest(image)
    key = view.key if view is not None else None
    if key is None:
        return "img-" + digest.hex()
    return "view-" + hashlib.sha256(digest + key.encode()).hexdigest()


def build_vision_requests(requests: Sequence[VisionRequest], embedder: ImageEmbedder) -> list[dict]:
    """The prompts ``LLM.generate`` takes: LLaVA-1.5 text with one ``<image>``, embeddings and uuids.

    vLLM reads a list of 2-D tensors as one embedding item each (a bare 2-D tensor would be taken
    for an image), so each prompt carries ``[embeddings]`` of shape (num_image_tokens, hidden) in
    the model's dtype, on the CPU: they cross to vLLM's engine process.
    """
    embeddings = embedder.embed([r.image for r in requests], [r.view for r in requests])
    return [
        {
            "prompt": llava_prompt(request.messages),
            "multi_modal_data": {"image": [embedding.cpu()]},
            "multi_modal_uuids": {"image": [view_uuid(request.image, request.view)]},
        }
        for request, embedding in zip(requests, embeddings)
    ]


def text_prompt(request: TextRequest) -> str:
    """The MLLM's own language model, text only: the same string the hf text engine generates from."""
    return llava_prompt(request.messages, with_image=False)


def sampling_kwargs(sampling: SamplingParams, seed: int | None) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments with the hf engine's meaning.

    Temperature 0 is greedy in both; top-k is left at vLLM's default (off), as the hf engine turns
    it off; the per-request seed makes a sampled answer independent of what it was batched with.
    """
    greedy = sampling.temperature == 0
    kwargs: dict[str, Any] = {
        "temperature": sampling.temperature,
        "top_p": 1.0 if greedy else sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
    }
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs


def to_vllm_sampling(sampling: SamplingParams, seed: int | None) -> vllm.SamplingParams:
    import vllm

    return vllm.SamplingParams(**sampling_kwargs(sampling, seed))


@dataclass
class VllmRuntime:
    """One vLLM ``LLM`` per shard, shared by the vision and text engines, plus the image embedder."""

    model_id: str
    llm: vllm.LLM
    embedder: ImageEmbedder | None

    @classmethod
    def load(
        cls, model_id: str, spec: VllmSpec, device: str, dtype: str, seed: int, images: bool
    ) -> VllmRuntime:
        """``images``: weakening runs here, so vLLM takes image embeddings and the embedder loads.

        vLLM keeps its own vision tower loaded (``limit_mm_per_prompt`` 1) although only embeddings
        reach it: older releases refuse embeddings when the image limit is 0 (vLLM PR 32493, January
        2026, lifted that).
        """
        try:
            from vllm import LLM
        except ImportError as err:
            raise ValueError(_VLLM_MISSING) from err
        dev = pick_device(device)
        if dev.type != "cuda":
            raise ValueError(
                f"engine 'vllm' runs on a CUDA GPU but the recipe's device is {device!r}; {_VLLM_MISSING}"
            )
        torch_dtype = pick_dtype(dtype, dev)
        llm = LLM(
            model=model_id,
            dtype=str(torch_dtype).removeprefix("torch."),
            seed=seed,
            enable_mm_embeds=images,
            limit_mm_per_prompt={"image": 1 if images else 0},
            gpu_memory_utilization=spec.gpu_memory_utilization,
            tensor_parallel_size=spec.tensor_parallel_size,
            max_model_len=spec.max_model_len,
            enforce_eager=spec.enforce_eager,
        )
        embedder = ImageEmbedder.from_pretrained(model_id, dev, torch_dtype) if images else None
        return cls(model_id=model_id, llm=llm, embedder=embedder)


def _result(output: vllm.RequestOutput) -> EngineResult:
    completion = output.outputs[0]
    return EngineResult(
        text=completion.text.strip(),
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids),
    )


def _generate(llm: vllm.LLM, prompts: list, params: list) -> list[EngineResult]:
    """Results in request order; a request vLLM rejects (e.g. longer than max_model_len) fails alone.

    vLLM validates every prompt before it starts and raises ``ValueError`` for the whole call, so
    such a batch is retried one request at a time. Engine failures (CUDA, a dead engine) propagate:
    the shard stops and resumes from its last written record.
    """
    try:
        return [_result(o) for o in llm.generate(prompts, params, use_tqdm=False)]
    except ValueError:
        results = []
        for prompt, param in zip(prompts, params):
            try:
                results.append(_result(llm.generate([prompt], [param], use_tqdm=False)[0]))
            except ValueError as err:
                results.append(EngineResult(error=f"vLLM rejected the request: {err}"))
        return results


class VllmVisionEngine:
    """Answers (image, conversation) batches from image embeddings the shard noised itself."""

    name = "vllm"

    def __init__(self, runtime: VllmRuntime):
        if runtime.embedder is None:
            raise ValueError("VllmVisionEngine needs a VllmRuntime loaded with images=True")
        self.runtime = runtime

    def generate(self, requests: list[VisionRequest]) -> list[EngineResult]:
        prompts = build_vision_requests(requests, self.runtime.embedder)
        params = [to_vllm_sampling(r.sampling, r.seed) for r in requests]
        return _generate(self.runtime.llm, prompts, params)

    def close(self) -> None:
        self.runtime = None  # type: ignore[assignment]


class VllmTextEngine:
    """Offline ``LLM.generate`` on text prompts (error injection with the MLLM's own language model)."""

    name = "vllm"

    def __init__(self, runtime: VllmRuntime):
        self.runtime = runtime

    def generate(self, requests: list[TextRequest]) -> list[EngineResult]:
        prompts = [text_prompt(r) for r in requests]
        params = [to_vllm_sampling(r.sampling, r.seed) for r in requests]
        return _generate(self.runtime.llm, prompts, params)

    def close(self) -> None:
        self.runtime = None  # type: ignore[assignment]
