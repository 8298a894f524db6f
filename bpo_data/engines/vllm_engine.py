"""vLLM engines: LLaVA-1.5 answers from image embeddings, and its language model rewrites text.

vLLM cannot change an image in the middle of its own vision tower, so the shard computes the image
embeddings itself with the HF vision tower + projector of the same checkpoint (``ImageEmbedder``,
which runs transformers' own ``LlavaModel.get_image_features``), applying each request's view
where the hf engine applies it (``viewed_pixels``, ``viewed_features``), and hands vLLM the
projector output as image embeddings (``LLM(enable_mm_embeds=True)``).

vLLM keys its encoder, processor and prefix caches by each multimodal item's uuid (by default a
hash of its content). Every view gets its own uuid (``view_uuid``), so a cached clean image or
another noise draw of the same image is never reused for this one.

Shaped for a full GPU: requests stream into vLLM's engine one at a time and join its running batch
at the next step (``VllmFeeder``), so the scheduler never drains between batches; the next images
are preprocessed and embedded on a thread of their own while vLLM decodes (``EmbeddingPrefetcher``)
and cross to the host through pinned memory; prefix caching computes the injection prompts' shared
system text and examples once.

Everything up to the vLLM call runs without vLLM (``build_vision_requests``, ``engine_args``,
``sampling_kwargs``, ``text_prompt``, and the feeder and prefetcher given any object with
``LLMEngine``'s ``add_request`` / ``step`` / ``abort_request``); only ``VllmRuntime.load`` and
``to_vllm_sampling`` import vLLM.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
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
    "engine 'vllm' needs vLLM 0.20 or later (image embeddings need its enable_mm_embeds), which runs "
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
        return self.features(self.pixels(images), views)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The processor's pixel values of a chunk of images (CPU work: resize, crop, normalise)."""
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def features(self, pixels: torch.Tensor, views: Sequence[ImageView | None]) -> list[torch.Tensor]:
        """The projected image features of ``pixels``, each seen through its view (device work)."""
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


def to_host(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """CPU copies of GPU tensors through pinned memory: the copies run asynchronously, one wait for all.

    (CPU tensors are returned as they are.)
    """
    if not tensors or tensors[0].device.type != "cuda":
        return [t.cpu() for t in tensors]
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, source in zip(host, tensors):
        target.copy_(source, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return host


def build_vision_requests(requests: Sequence[VisionRequest], embedder: ImageEmbedder) -> list[dict]:
    """The prompts vLLM takes: LLaVA-1.5 text with one ``<image>``, embeddings and uuids.

    vLLM reads a list of 2-D tensors as one embedding item each (a bare 2-D tensor would be taken
    for an image), so each prompt carries ``[embeddings]`` of shape (num_image_tokens, hidden) in
    the model's dtype, on the CPU: they cross to vLLM's engine process.
    """
    embeddings = to_host(embedder.embed([r.image for r in requests], [r.view for r in requests]))
    return [
        {
            "prompt": llava_prompt(request.messages),
            "multi_modal_data": {"image": [embedding]},
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
    """vLLM's sampling parameters; only the finished answer is reported (no per-step partial outputs)."""
    import vllm
    from vllm.sampling_params import RequestOutputKind

    return vllm.SamplingParams(**sampling_kwargs(sampling, seed), output_kind=RequestOutputKind.FINAL_ONLY)


def engine_args(model_id: str, spec: VllmSpec, dtype: torch.dtype, seed: int, images: bool) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``EngineArgs`` (the same as ``LLM(...)``'s) for a shard.

    ``images``: weakening runs here, so vLLM takes image embeddings (``enable_mm_embeds``). vLLM
    keeps its own vision tower loaded (``limit_mm_per_prompt`` 1) although only embeddings reach
    it: older releases refuse embeddings when the image limit is 0 (vLLM PR 32493, January 2026,
    lifted that). Prefix caching computes a shared prompt prefix once: every injection prompt
    starts with the same 612–675 tokens of system text and examples (BENCHMARKS.md).
    """
    return {
        "model": model_id,
        "dtype": str(dtype).removeprefix("torch."),
        "seed": seed,
        "enable_mm_embeds": images,
        "limit_mm_per_prompt": {"image": 1 if images else 0},
        "enable_prefix_caching": spec.enable_prefix_caching,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "max_model_len": spec.max_model_len,
        "enforce_eager": spec.enforce_eager,
    }


def _result(output: vllm.RequestOutput) -> EngineResult:
    completion = output.outputs[0]
    return EngineResult(
        text=completion.text.strip(),
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids),
    )


def _resolve(future: Future, result: EngineResult | None = None, error: BaseException | None = None) -> None:
    """Settle a future unless its caller already cancelled it."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class VllmFeeder:
    """Keeps vLLM's scheduler fed: requests are added the moment they are submitted, answers handed
    back the moment they finish.

    ``LLM.generate`` takes a list and returns when its last request is done, so a caller handing it
    batches leaves the GPU decoding a shrinking tail at the end of each one. Here one thread owns
    vLLM's ``LLMEngine`` and runs the loop of vLLM's own LLM-engine example (``add_request`` what was
    submitted, ``step``, collect what ``finished``), so new requests join the running batch at the
    next step and the scheduler always has work waiting.

    A request vLLM refuses (longer than ``max_model_len``, say) fails alone, as an error result. A
    failing ``step`` means the engine is gone: every request out fails with that error and later
    submits raise, which stops the shard (a rerun resumes it).
    """

    def __init__(self, engine: Any, poll_s: float = 0.05):
        self.engine = engine
        self._poll_s = poll_s
        self._inbox: queue.SimpleQueue[tuple[Any, Any, Future]] = queue.SimpleQueue()
        self._running: dict[str, Future] = {}
        self._ids = itertools.count()
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vllm-feeder", daemon=True)
        self._thread.start()

    def submit(self, prompt: Any, params: Any, future: Future | None = None) -> Future[EngineResult]:
        """Queue one prompt; ``future`` (made here when None) resolves to its ``EngineResult``."""
        if self._failure is not None:
            raise RuntimeError(
                f"the vLLM engine stopped ({type(self._failure).__name__}: {self._failure}); "
                "run the same command again to resume the shard"
            ) from self._failure
        if self._stop.is_set():
            raise RuntimeError("this vLLM engine is closed")
        future = future if future is not None else Future()
        self._inbox.put((prompt, params, future))
        if self._failure is not None or self._stop.is_set():  # the loop ended while this was queued
            self._drain(self._failure)
        return future

    def close(self) -> None:
        """Stop the loop, abort what vLLM is still running and cancel what waits; safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self._running:
            self.engine.abort_request(list(self._running))
        for future in self._running.values():
            future.cancel()
        self._running.clear()
        self._drain(None)

    def _drain(self, error: BaseException | None) -> None:
        """Settle what waits in the inbox: with ``error``, or cancelled (the engine was closed)."""
        while True:
            try:
                future = self._inbox.get_nowait()[2]
            except queue.Empty:
                return
            if error is None:
                future.cancel()
            else:
                _resolve(future, error=error)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._take(wait=not self._running)
                if self._running:
                    self._step()
        except BaseException as err:  # noqa: BLE001 - reported to every caller, then to the next submit
            self._failure = err
            for future in self._running.values():
                _resolve(future, error=err)
            self._running.clear()
            self._drain(err)

    def _take(self, wait: bool) -> None:
        """Add every submitted request to the engine; with ``wait``, wait a moment for the first."""
        while True:
            try:
                item = self._inbox.get(timeout=self._poll_s) if wait else self._inbox.get_nowait()
            except queue.Empty:
                return
            wait = False
            prompt, params, future = item
            if future.cancelled():
                continue
            request_id = str(next(self._ids))
            try:
                self.engine.add_request(request_id, prompt, params)
            except Exception as err:  # noqa: BLE001 - vLLM validates each request as it is added
                _resolve(future, EngineResult(error=f"vLLM rejected the request: {err}"))
                continue
            self._running[request_id] = future

    def _step(self) -> None:
        for output in self.engine.step():
            if output.finished:
                future = self._running.pop(output.request_id, None)
                if future is not None:
                    _resolve(future, _result(output))
        dropped = [request_id for request_id, future in self._running.items() if future.cancelled()]
        if dropped:
            self.engine.abort_request(dropped)
            for request_id in dropped:
                del self._running[request_id]


class EmbeddingPrefetcher:
    """Computes image embeddings on a thread of its own, while vLLM generates on the GPU.

    Weakening requests queue here with their images; the thread takes up to ``batch`` at a time,
    runs the processor and the HF vision tower + projector (each through its request's view),
    copies the embeddings to pinned host memory and submits the prompts to the feeder. So the next
    images are preprocessed and embedded while vLLM decodes the ones before them.
    """

    def __init__(self, embedder: ImageEmbedder, feeder: VllmFeeder, batch: int, poll_s: float = 0.05):
        self.embedder = embedder
        self.feeder = feeder
        self.batch = batch
        self._poll_s = poll_s
        self._inbox: queue.SimpleQueue[tuple[VisionRequest, Future]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vllm-embedder", daemon=True)
        self._thread.start()

    def submit(self, request: VisionRequest) -> Future[EngineResult]:
        if self._stop.is_set():
            raise RuntimeError("this vLLM engine is closed")
        future: Future[EngineResult] = Future()
        self._inbox.put((request, future))
        if self._stop.is_set():  # closed while this was queued
            self._cancel_waiting()
        return future

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._cancel_waiting()

    def _cancel_waiting(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()[1].cancel()
            except queue.Empty:
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            chunk = self._take()
            if chunk:
                self._embed(chunk)

    def _take(self) -> list[tuple[VisionRequest, Future]]:
        chunk: list[tuple[VisionRequest, Future]] = []
        try:
            chunk.append(self._inbox.get(timeout=self._poll_s))
            while len(chunk) < self.batch:
                chunk.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        return [(request, future) for request, future in chunk if not future.cancelled()]

    def _embed(self, chunk: list[tuple[VisionRequest, Future]]) -> None:
        requests = [request for request, _ in chunk]
        try:
            prompts = build_vision_requests(requests, self.embedder)
        except Exception as err:  # noqa: BLE001 - a bad image fails its chunk, not the shard
            if len(chunk) > 1:  # find the request at fault: the others still go through
                for one in chunk:
                    self._embed([one])
                return
            _resolve(chunk[0][1], EngineResult(error=f"computing the image embedding failed: {err}"))
            return
        for (request, future), prompt in zip(chunk, prompts):
            try:
                self.feeder.submit(prompt, to_vllm_sampling(request.sampling, request.seed), future)
            except Exception as err:  # noqa: BLE001 - the feeder is gone, or vLLM refuses the parameters
                _resolve(future, error=err)


@dataclass
class VllmRuntime:
    """One vLLM engine per shard, shared by the vision and text engines, plus the image embedder."""

    model_id: str
    feeder: VllmFeeder
    prefetcher: EmbeddingPrefetcher | None
    in_flight: int

    @property
    def embedder(self) -> ImageEmbedder | None:
        return self.prefetcher.embedder if self.prefetcher is not None else None

    @classmethod
    def load(
        cls, model_id: str, spec: VllmSpec, device: str, dtype: str, seed: int, images: bool
    ) -> VllmRuntime:
        """``images``: weakening runs here, so vLLM takes image embeddings and the embedder loads."""
        try:
            from vllm import EngineArgs, LLMEngine
        except ImportError as err:
            raise ValueError(_VLLM_MISSING) from err
        dev = pick_device(device)
        if dev.type != "cuda":
            raise ValueError(
                f"engine 'vllm' runs on a CUDA GPU but the recipe's device is {device!r}; {_VLLM_MISSING}"
            )
        torch_dtype = pick_dtype(dtype, dev)
        args = engine_args(model_id, spec, torch_dtype, seed, images)
        engine = LLMEngine.from_engine_args(EngineArgs(**args))
        feeder = VllmFeeder(engine)
        prefetcher = None
        if images:
            embedder = ImageEmbedder.from_pretrained(model_id, dev, torch_dtype)
            prefetcher = EmbeddingPrefetcher(embedder, feeder, spec.embed_batch)
        return cls(model_id=model_id, feeder=feeder, prefetcher=prefetcher, in_flight=spec.in_flight)

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.feeder.close()


def _answer_all(submit: Callable[[Any], Future[EngineResult]], requests: Sequence[Any]) -> list[EngineResult]:
    futures = [submit(request) for request in requests]
    try:
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        raise


class VllmVisionEngine:
    """Answers (image, conversation) requests from image embeddings the shard noised itself.

    Streams (``submit``): each request's embedding is computed on the prefetch thread and its
    prompt joins vLLM's running batch at once; ``generate`` answers a list the same way.
    """

    name = "vllm"

    def __init__(self, runtime: VllmRuntime):
        if runtime.prefetcher is None:
            raise ValueError("VllmVisionEngine needs a VllmRuntime loaded with images=True")
        self.runtime = runtime
        self.in_flight = runtime.in_flight

    def submit(self, request: VisionRequest) -> Future[EngineResult]:
        return self.runtime.prefetcher.submit(request)

    def generate(self, requests: list[VisionRequest]) -> list[EngineResult]:
        return _answer_all(self.submit, requests)

    def close(self) -> None:
        self.runtime.close()


class VllmTextEngine:
    """Text prompts to vLLM's engine (error injection with the MLLM's own language model), streamed."""

    name = "vllm"

    def __init__(self, runtime: VllmRuntime):
        self.runtime = runtime
        self.in_flight = runtime.in_flight

    def submit(self, request: TextRequest) -> Future[EngineResult]:
        params = to_vllm_sampling(request.sampling, request.seed)
        return self.runtime.feeder.submit(text_prompt(request), params)

    def generate(self, requests: list[TextRequest]) -> list[EngineResult]:
        return _answer_all(self.submit, requests)

    def close(self) -> None:
        self.runtime.close()
