"""The vLLM engine's request builder, checked without vLLM; the vLLM calls themselves need a GPU build.

The builder must hand vLLM exactly what the hf engine feeds LLaVA's language model: the same prompt
string and the same (noisy) projector output, one uuid per noise draw.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from bpo_data.engines.base import TextRequest, VisionRequest
from bpo_data.engines.build import build_engines
from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime
from bpo_data.engines.vllm_engine import (
    ImageEmbedder,
    build_vision_requests,
    sampling_kwargs,
    text_prompt,
    view_uuid,
)
from bpo_data.prompting import IMAGE_TOKEN, llava_prompt
from bpo_data.recipe import NoiseSpec, RunSettings, SamplingParams, VllmSpec
from bpo_data.smoke_model import llava_15_7b_config
from bpo_data.weaken.view import NoisyView

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vLLM is not installed: it needs a CUDA GPU build"
)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=1)


def _scene(i: int, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4 + i, 8, 30 + i, 34), fill=(200, 30, 30))
    draw.rectangle((34, 30 - i, 60, 56 - i), fill=(30, 30, 200))
    return image


def _requests(noise: NoiseSpec | None, sampling: SamplingParams = GREEDY, n: int = 3) -> list[VisionRequest]:
    return [
        VisionRequest(
            image=_scene(i),
            messages=[{"role": "user", "content": f"What is in picture {i}?"}],
            sampling=sampling,
            view=NoisyView(noise, 100 + i) if noise is not None else None,
            seed=100 + i,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def runtime(smoke_model_dir) -> LlavaRuntime:
    return LlavaRuntime.load(str(smoke_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def embedder(smoke_model_dir) -> ImageEmbedder:
    return ImageEmbedder.from_pretrained(str(smoke_model_dir), torch.device("cpu"), torch.float32)


def _hf_projector_outputs(runtime: LlavaRuntime, requests: list[VisionRequest]) -> torch.Tensor:
    """What the hf engine's language model receives as image embeddings, captured in a real run."""
    captured: list[torch.Tensor] = []
    projector = runtime.model.model.multi_modal_projector
    handle = projector.register_forward_hook(lambda _m, _args, out: captured.append(out.detach().clone()))
    try:
        HFVisionEngine(runtime).generate(requests)
    finally:
        handle.remove()
    assert len(captured) == 1, "one batch of images is projected once, during prefill"
    return captured[0]


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_embeddings_equal_what_the_hf_engine_feeds_llava(runtime, embedder, space):
    noise = NoiseSpec(step=500, space=space)
    requests = _requests(noise)
    expected = _hf_projector_outputs(runtime, requests)
    built = build_vision_requests(requests, embedder)
    got = torch.stack([prompt["multi_modal_data"]["image"][0] for prompt in built])
    torch.testing.assert_close(got, expected)
    clean = torch.stack(embedder.embed([r.image for r in requests], [None] * 3))
    assert (got - clean).norm() > 0.2 * clean.norm(), "the noise must reach the embeddings"


def test_step_zero_is_the_clean_image(runtime, embedder):
    requests = _requests(NoiseSpec(step=0, space="features"))
    got = torch.stack([p["multi_modal_data"]["image"][0] for p in build_vision_requests(requests, embedder)])
    torch.testing.assert_close(got, _hf_projector_outputs(runtime, _requests(None)))


def test_prompt_is_the_one_the_hf_engine_uses(embedder):
    messages = [
        {"role": "user", "content": "What is on the table?"},
        {"role": "assistant", "content": "A red cup."},
        {"role": "user", "content": "And to its left?"},
    ]
    request = VisionRequest(
        image=_scene(0), messages=messages, sampling=GREEDY, view=NoisyView(NoiseSpec(), 0)
    )
    (built,) = build_vision_requests([request], embedder)
    assert built["prompt"] == llava_prompt(messages)
    assert built["prompt"].count(IMAGE_TOKEN) == 1
    assert built["prompt"].startswith("USER: <image>\nWhat is on the table? ASSISTANT: A red cup. USER:")
    assert text_prompt(TextRequest(messages=messages, sampling=GREEDY)) == llava_prompt(
        messages, with_image=False
    )
    assert IMAGE_TOKEN not in text_prompt(TextRequest(messages=messages, sampling=GREEDY))


def test_llava_15_7b_sized_embeddings_have_the_language_models_shape_and_dtype():
    """CLIP ViT-L/14-336 into Llama-2-7B's width, on the meta device: real sizes, no compute."""
    from transformers import CLIPImageProcessor

    config = llava_15_7b_config()
    processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    embedder = ImageEmbedder.from_config(config, processor, torch.device("meta"), torch.bfloat16)
    views = [NoisyView(NoiseSpec(step=500, space="features"), 1), NoisyView(NoiseSpec(step=900), 2), None]
    embeddings = embedder.embed([_scene(i, size=400) for i in range(3)], views)
    assert [tuple(e.shape) for e in embeddings] == [(576, 4096)] * 3
    assert {e.dtype for e in embeddings} == {torch.bfloat16}


def test_each_prompt_carries_one_2d_embedding_on_the_cpu_and_one_uuid(embedder):
    built = build_vision_requests(_requests(NoiseSpec(step=500), n=2), embedder)
    for prompt in built:
        (embedding,) = prompt["multi_modal_data"]["image"]
        assert embedding.ndim == 2 and embedding.device.type == "cpu" and embedding.dtype == torch.float32
        assert len(prompt["multi_modal_uuids"]["image"]) == 1


def test_uuid_is_stable_per_draw_and_unique_across_draws(embedder):
    image = _scene(3)

    def uuid(image, spec, seed):
        return view_uuid(image, NoisyView(spec, seed) if spec is not None else None)

    noise = NoiseSpec(step=500)
    first = uuid(image, noise, 7)
    assert uuid(image.copy(), NoiseSpec(step=500), 7) == first
    others = {
        uuid(image, noise, 8),
        uuid(image, NoiseSpec(step=501), 7),
        uuid(image, NoiseSpec(step=500, space="features"), 7),
        uuid(image, NoiseSpec(step=500, schedule="linear"), 7),
        uuid(_scene(4), noise, 7),
        uuid(image, None, 7),
    }
    assert first not in others and len(others) == 6
    clean = uuid(image, None, 0)
    assert uuid(image, NoiseSpec(step=0), 123) == clean == uuid(image, None, 5)
    built = build_vision_requests(_requests(noise, n=3), embedder)
    uuids = [p["multi_modal_uuids"]["image"][0] for p in built]
    assert len(set(uuids)) == 3


def test_sampling_params_keep_the_hf_engines_meaning():
    greedy = sampling_kwargs(SamplingParams(temperature=0.0, top_p=0.5, max_new_tokens=64), seed=11)
    assert greedy == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 11}
    sampled = sampling_kwargs(SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=512), seed=None)
    assert sampled == {"temperature": 0.8, "top_p": 0.95, "max_tokens": 512}


def _copy_all_but_weights(source, target) -> None:
    for path in source.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, target / path.name)


def test_checkpoint_layouts_of_other_transformers_versions_load_the_same_weights(
    smoke_model_dir, embedder, tmp_path
):
    """Hub llava-hf checkpoints are sharded and name the tower ``vision_tower.vision_model.*``."""
    _copy_all_but_weights(smoke_model_dir, tmp_path)
    weights = load_file(smoke_model_dir / "model.safetensors")
    legacy = {
        (
            f"vision_tower.vision_model.{k.removeprefix('vision_tower.')}"
            if k.startswith("vision_tower.")
            else k
        ): v
        for k, v in weights.items()
    }
    keys = sorted(legacy)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for filename, names in shards.items():
        save_file({k: legacy[k].contiguous() for k in names}, tmp_path / filename)
    index = {"metadata": {}, "weight_map": {k: f for f, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = ImageEmbedder.from_pretrained(str(tmp_path), torch.device("cpu"), torch.float32)
    requests = _requests(NoiseSpec(step=300, space="features"))
    args = ([r.image for r in requests], [r.view for r in requests])
    for got, expected in zip(loaded.embed(*args), embedder.embed(*args)):
        torch.testing.assert_close(got, expected)


def test_a_checkpoint_without_a_projector_names_the_fix(smoke_model_dir, tmp_path):
    _copy_all_but_weights(smoke_model_dir, tmp_path)
    weights = load_file(smoke_model_dir / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "projector" not in k}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"no weights for multi_modal_projector\..*linear_1"):
        ImageEmbedder.from_pretrained(str(tmp_path), torch.device("cpu"), torch.float32)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
@pytest.mark.parametrize("kind", ["weaken", "inject"])
def test_a_vllm_recipe_where_vllm_is_missing_says_how_to_get_it(kind):
    run = RunSettings.model_validate({kind: {"engine": "vllm"}})
    with pytest.raises(ValueError, match=r"pip install 'bpo-data\[vllm\]'.*engine to 'hf'"):
        build_engines("smoke", run, 0, vision=kind == "weaken", text=kind == "inject")


@needs_vllm
def test_vllm_sampling_params_accept_the_mapping():
    from bpo_data.engines.vllm_engine import to_vllm_sampling

    params = to_vllm_sampling(SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=33), seed=5)
    assert (params.temperature, params.top_p, params.max_tokens, params.seed) == (0.7, 0.9, 33, 5)
    assert to_vllm_sampling(GREEDY, seed=None).temperature == 0.0


@needs_vllm
@needs_gpu
@pytest.mark.slow
def test_greedy_hf_and_vllm_answers_agree_on_the_same_noisy_embeddings(smoke_model_dir):
    """Set BPO_VLLM_TEST_MODEL to a local LLaVA-1.5 folder to check a real checkpoint (in bf16)."""
    from bpo_data.engines.vllm_engine import VllmRuntime, VllmVisionEngine

    model = os.environ.get("BPO_VLLM_TEST_MODEL") or str(smoke_model_dir)
    dtype = "float32" if model == str(smoke_model_dir) else "bfloat16"
    sampling = SamplingParams(temperature=0.0, max_new_tokens=24)
    requests = _requests(NoiseSpec(step=500), sampling) + _requests(
        NoiseSpec(step=500, space="features"), sampling
    )

    hf_runtime = LlavaRuntime.load(model, device="cuda", dtype=dtype)
    hf_answers = [r.text for r in HFVisionEngine(hf_runtime).generate(requests)]
    del hf_runtime
    torch.cuda.empty_cache()

    spec = VllmSpec(gpu_memory_utilization=0.6, max_model_len=2048, enforce_eager=True)
    vllm_runtime = VllmRuntime.load(model, spec, "cuda", dtype, seed=0, images=True)
    results = VllmVisionEngine(vllm_runtime).generate(requests)
    assert all(r.error is None for r in results)
    assert [r.text for r in results] == hf_answers
