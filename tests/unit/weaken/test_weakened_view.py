"""Image weakening: the noise schedule, what the weakened model sees, and that answers come from it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from bpo_data.engines.base import VisionRequest
from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime, projector_of, viewed_features, viewed_pixels
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import NoiseSpec, SamplingParams
from bpo_data.weaken.schedule import signal_weight
from bpo_data.weaken.view import NoisyView, add_noise

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=1)


@pytest.fixture(scope="module")
def runtime(smoke_model_dir) -> LlavaRuntime:
    return LlavaRuntime.load(str(smoke_model_dir), device="cpu", dtype="float32")


def _scene(i: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4 + 6 * i, 8, 30 + 6 * i, 34), fill=(200, 30 + 40 * i, 30))
    draw.rectangle((34, 30 - 4 * i, 60, 56 - 4 * i), fill=(30, 30, 200 - 30 * i))
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


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_a_view_changes_only_the_space_its_spec_names(space):
    x = torch.ones(4, 8)
    view = NoisyView(NoiseSpec(step=500, space=space), seed=1)
    other = "features" if space == "pixel" else "pixel"
    assert not torch.equal(getattr(view, "pixels" if space == "pixel" else "features")(x), x)
    assert torch.equal(getattr(view, "pixels" if other == "pixel" else "features")(x), x)
    assert NoisyView(NoiseSpec(step=0, space=space), seed=1).key is None
    assert view.key != NoisyView(NoiseSpec(step=500, space=space), seed=2).key


def _next_token_logprobs(runtime: LlavaRuntime, image: Image.Image, view: NoisyView | None) -> torch.Tensor:
    """The next-token distribution of the model seen through ``view``, via the engines' own view hooks."""
    inputs = runtime.processor(
        images=[image],
        text=[llava_prompt([{"role": "user", "content": "What is here?"}])],
        return_tensors="pt",
    )
    inputs["pixel_values"] = viewed_pixels(inputs["pixel_values"], [view])
    with torch.no_grad(), viewed_features(projector_of(runtime.model), [view]):
        logits = runtime.model(**inputs).logits[0, -1]
    return torch.log_softmax(logits.double(), dim=-1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return torch.sum(p.exp() * (p - q)).item()


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_divergence_from_clean_grows_with_the_step(runtime, space):
    clean = [_next_token_logprobs(runtime, _scene(i), None) for i in range(3)]
    mean_kl = []
    for step in (0, 200, 500, 900):
        kls = [
            _kl(
                clean[i],
                _next_token_logprobs(runtime, _scene(i), NoisyView(NoiseSpec(step=step, space=space), seed)),
            )
            for i in range(3)
            for seed in range(2)
        ]
        mean_kl.append(sum(kls) / len(kls))
    assert mean_kl[0] == 0.0
    assert all(a < b for a, b in zip(mean_kl, mean_kl[1:])), mean_kl


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_at_the_last_step_the_answer_hardly_depends_on_the_image(runtime, space):
    """Two images, one noise draw: at step 999 of the linear schedule (signal weight 0.006) the model sees
    (almost) only the noise. The sigmoid schedule keeps 0.28 of the signal there."""

    def gap(step: int) -> float:
        view = NoisyView(NoiseSpec(step=step, space=space, schedule="linear"), seed=3)
        return _kl(
            _next_token_logprobs(runtime, _scene(0), view), _next_token_logprobs(runtime, _scene(3), view)
        )

    assert gap(0) > 0
    assert gap(999) < 0.02 * gap(0), (gap(999), gap(0))


@pytest.mark.parametrize("space", ["pixel", "features"])
def test_engine_answers_from_the_weakened_model(runtime, space):
    """Greedy first token = argmax of the *noisy* distribution (not clean, not a contrast of the two)."""
    engine = HFVisionEngine(runtime)
    agree_noisy = differs_from_clean = 0
    for i in range(6):
        view = NoisyView(NoiseSpec(step=900, space=space), seed=i)
        request = VisionRequest(
            _scene(i % 4), [{"role": "user", "content": "What is here?"}], GREEDY, view=view
        )
        token_text = engine.generate([request])[0].text
        noisy = _next_token_logprobs(runtime, _scene(i % 4), view)
        clean = _next_token_logprobs(runtime, _scene(i % 4), None)
        agree_noisy += (
            token_text == runtime.tokenizer.decode([int(noisy.argmax())], skip_special_tokens=True).strip()
        )
        differs_from_clean += int(noisy.argmax()) != int(clean.argmax())
    assert agree_noisy == 6
    assert differs_from_clean >= 1  # the test would not tell clean from noisy otherwise


def test_step_zero_is_the_clean_image(runtime):
    engine = HFVisionEngine(runtime)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=8)
    messages = [{"role": "user", "content": "Describe it."}]
    for space in ("pixel", "features"):
        zero = NoisyView(NoiseSpec(step=0, space=space), seed=5)
        for i in range(3):
            clean = engine.generate([VisionRequest(_scene(i), messages, sampling)])[0].text
            assert engine.generate([VisionRequest(_scene(i), messages, sampling, view=zero)])[0].text == clean


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_an_answer_does_not_depend_on_its_batch_neighbours(runtime, temperature):
    """Left-padded batches give each row its own answer: greedy, and sampled from the row's own seed."""
    engine = HFVisionEngine(runtime)
    questions = ["What?", "Describe the picture in detail please, with every object.", "How many?"]
    sampling = SamplingParams(temperature=temperature, top_p=0.9, max_new_tokens=8)
    requests = [
        VisionRequest(
            _scene(i),
            [{"role": "user", "content": q}],
            sampling,
            view=NoisyView(NoiseSpec(step=500), seed=i),
            seed=100 + i,
        )
        for i, q in enumerate(questions)
    ]
    batched = [r.text for r in engine.generate(requests)]
    single = [engine.generate([r])[0].text for r in requests]
    reversed_batch = [r.text for r in engine.generate(requests[::-1])][::-1]
    assert batched == single == reversed_batch
    if temperature:
        reseeded = [
            VisionRequest(r.image, r.messages, r.sampling, view=r.view, seed=r.seed + 7) for r in requests
        ]
        assert [r.text for r in engine.generate(reseeded)] != batched  # the seed, not luck, fixed them
