"""Image weakening: the noise schedule, and that the engine samples from the *weakened* model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from bpo_data.engines.base import VisionRequest
from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime
from bpo_data.negatives.noise import add_noise, signal_weight
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import NoiseSpec, SamplingParams


@pytest.fixture(scope="module")
def runtime(smoke_model_dir) -> LlavaRuntime:
    return LlavaRuntime.load(str(smoke_model_dir), device="cpu", dtype="float32")


def _scene(i: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4 + i, 8, 30 + i, 34), fill=(200, 30, 30))
    draw.rectangle((34, 30 - i, 60, 56 - i), fill=(30, 30, 200))
    return image


def test_signal_weight_matches_design():
    assert signal_weight(NoiseSpec(step=0)) == 1.0
    assert signal_weight(NoiseSpec(step=500)) == pytest.approx(0.863, abs=1e-3)
    assert signal_weight(NoiseSpec(step=900)) == pytest.approx(0.365, abs=1e-3)
    linear = [signal_weight(NoiseSpec(step=s, schedule="linear")) for s in (1, 250, 500, 999)]
    assert linear == sorted(linear, reverse=True) and linear[-1] < 0.01


def test_noise_is_seeded_and_has_the_ddpm_moments():
    x = torch.zeros(3, 64, 64) + 2.0
    spec = NoiseSpec(step=500)
    a, b = add_noise(x, spec, seed=7), add_noise(x, spec, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, add_noise(x, spec, seed=8))
    w = signal_weight(spec)
    assert a.mean().item() == pytest.approx(2.0 * w, abs=0.02)
    assert a.std().item() == pytest.approx((1 - w**2) ** 0.5, rel=0.05)
    assert torch.equal(add_noise(x, NoiseSpec(step=0), seed=7), x)


def _next_token_logprobs(
    runtime: LlavaRuntime, image: Image.Image, spec: NoiseSpec | None, seed: int, space: str
):
    inputs = runtime.processor(
        images=[image],
        text=[llava_prompt([{"role": "user", "content": "What is here?"}])],
        return_tensors="pt",
    )
    hook = None
    if spec is not None and space == "pixel":
        inputs["pixel_values"] = add_noise(inputs["pixel_values"][0], spec, seed)[None]
    elif spec is not None:

        def noisy(_module, args):
            return (torch.stack([add_noise(f, spec, seed) for f in args[0]]),)

        hook = runtime.model.model.multi_modal_projector.register_forward_pre_hook(noisy)
    try:
        with torch.no_grad():
            logits = runtime.model(**inputs).logits[0, -1]
    finally:
        if hook is not None:
            hook.remove()
    return torch.log_softmax(logits.double(), dim=-1)


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_divergence_from_clean_grows_with_the_step(runtime, space):
    steps = [0, 200, 500, 900]
    mean_kl = []
    for step in steps:
        kls = []
        for i in range(4):
            clean = _next_token_logprobs(runtime, _scene(i), None, 0, space)
            for seed in range(4):
                noisy = _next_token_logprobs(
                    runtime, _scene(i), NoiseSpec(step=step, space=space), seed, space
                )
                kls.append(torch.sum(clean.exp() * (clean - noisy)).item())
        mean_kl.append(sum(kls) / len(kls))
    assert mean_kl[0] == 0.0
    assert all(a < b for a, b in zip(mean_kl, mean_kl[1:])), mean_kl


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_engine_answers_from_the_weakened_model(runtime, space):
    """Greedy first token = argmax of the *noisy* distribution (not clean, not a contrast of the two)."""
    engine = HFVisionEngine(runtime)
    agree_noisy = differs_from_clean = 0
    for i in range(6):
        spec = NoiseSpec(step=900, space=space)
        request = VisionRequest(
            image=_scene(i),
            messages=[{"role": "user", "content": "What is here?"}],
            sampling=SamplingParams(temperature=0.0, max_new_tokens=1),
            noise=spec,
            noise_seed=i,
        )
        token_text = engine.generate([request])[0].text
        noisy = _next_token_logprobs(runtime, _scene(i), spec, i, space)
        clean = _next_token_logprobs(runtime, _scene(i), None, 0, space)
        tok = runtime.tokenizer
        agree_noisy += token_text == tok.decode([int(noisy.argmax())], skip_special_tokens=True).strip()
        differs_from_clean += int(noisy.argmax()) != int(clean.argmax())
    assert agree_noisy == 6
    assert differs_from_clean >= 1  # the test would not tell clean from noisy otherwise


def test_batched_left_padded_equals_one_by_one(runtime):
    engine = HFVisionEngine(runtime)
    questions = ["What?", "Describe the picture in detail please, with every object.", "How many?"]
    requests = [
        VisionRequest(
            image=_scene(i),
            messages=[{"role": "user", "content": q}],
            sampling=SamplingParams(temperature=0.0, max_new_tokens=8),
            noise=NoiseSpec(step=500),
            noise_seed=i,
        )
        for i, q in enumerate(questions)
    ]
    batched = [r.text for r in engine.generate(requests)]
    single = [engine.generate([r])[0].text for r in requests]
    assert batched == single
