"""The vLLM engine's feeding loop and image prefetch, run against a stand-in for vLLM's ``LLMEngine``.

vLLM has no CPU build, so ``StepEngine`` plays its ``add_request`` / ``step`` / ``abort_request``
contract (vLLM's own LLM-engine example loop): each request finishes after as many steps as its
prompt asks for, and the stand-in records what ran together. Everything else is the real code: the
feeder thread, the prefetch thread, the smoke model's vision tower, the streaming pipeline step.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from bpo_data.engines.base import TextRequest, VisionRequest, streams
from bpo_data.engines.hf import HFTextEngine, LlavaRuntime
from bpo_data.engines.vllm_engine import (
    EmbeddingPrefetcher,
    ImageEmbedder,
    VllmFeeder,
    VllmRuntime,
    VllmTextEngine,
    VllmVisionEngine,
    build_vision_requests,
    engine_args,
)
from bpo_data.recipe import NoiseSpec, SamplingParams, VllmSpec
from bpo_data.weaken.view import NoisyView


@dataclass
class StepEngine:
    """Stands in for vLLM's ``LLMEngine``: a request whose prompt says ``steps=N`` finishes at its N-th
    step and answers ``answer to X`` when the prompt says ``id=X``.

    ``max_running`` caps the batch like vLLM's ``max_num_seqs``; waiting requests start as slots free.
    """

    max_running: int = 4
    step_s: float = 0.002
    waiting: list[str] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)  # request id → steps left
    prompts: dict[str, object] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    added_while_running: int = 0
    aborted: list[str] = field(default_factory=list)
    fail_at_step: int | None = None
    thread_names: set[str] = field(default_factory=set)

    def add_request(self, request_id: str, prompt, params) -> None:
        self.thread_names.add(threading.current_thread().name)
        text = prompt["prompt"] if isinstance(prompt, dict) else prompt
        if "too long" in text:
            raise ValueError("the prompt is longer than max_model_len")
        if self.running:
            self.added_while_running += 1
        self.prompts[request_id] = prompt
        self.waiting.append(request_id)

    def step(self) -> list:
        self.thread_names.add(threading.current_thread().name)
        if self.fail_at_step is not None and len(self.batch_sizes) >= self.fail_at_step:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        while self.waiting and len(self.running) < self.max_running:
            request_id = self.waiting.pop(0)
            text = self._text(request_id)
            self.running[request_id] = int(_field(text, "steps") or 1)
        self.batch_sizes.append(len(self.running))
        time.sleep(self.step_s)
        finished = []
        for request_id in list(self.running):
            self.running[request_id] -= 1
            if self.running[request_id] == 0:
                del self.running[request_id]
                text = self._text(request_id)
                finished.append(
                    SimpleNamespace(
                        request_id=request_id,
                        finished=True,
                        prompt_token_ids=list(range(len(text.split()))),
                        outputs=[
                            SimpleNamespace(text=f" answer to {_field(text, 'id')} ", token_ids=[1, 2, 3])
                        ],
                    )
                )
        return finished

    def abort_request(self, request_ids: list[str]) -> None:
        self.aborted.extend(request_ids)
        for request_id in request_ids:
            self.running.pop(request_id, None)
            if request_id in self.waiting:
                self.waiting.remove(request_id)

    def _text(self, request_id: str) -> str:
        prompt = self.prompts[request_id]
        return prompt["prompt"] if isinstance(prompt, dict) else prompt


def _field(text: str, name: str) -> str | None:
    return next((word.split("=", 1)[1] for word in text.split() if word.startswith(f"{name}=")), None)


def ask(text: str) -> TextRequest:
    return TextRequest(messages=[{"role": "user", "content": text}], sampling=SamplingParams(temperature=0.0))


@pytest.fixture
def runtime():
    """A text-only runtime on the stand-in engine; ``vllm.SamplingParams`` is replaced by its kwargs."""
    made: list[VllmRuntime] = []

    def make(engine: StepEngine, in_flight: int = 8) -> VllmRuntime:
        built = VllmRuntime(
            model_id="stand-in", feeder=VllmFeeder(engine, poll_s=0.01), prefetcher=None, in_flight=in_flight
        )
        made.append(built)
        return built

    yield make
    for built in made:
        built.close()


@pytest.fixture(autouse=True)
def _no_vllm_sampling(monkeypatch):
    """``to_vllm_sampling`` imports vLLM; without it the stand-in gets the same keyword arguments."""
    from bpo_data.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "to_vllm_sampling", vllm_engine.sampling_kwargs)


def test_requests_join_the_running_batch_instead_of_waiting_for_it_to_drain(runtime):
    engine = StepEngine(max_running=4)
    text = VllmTextEngine(runtime(engine, in_flight=8))
    # One long request, then short ones submitted as others finish (the pipeline keeps in_flight out):
    # lock-step batches would wait for the long one each time.
    prompts = ["steps=40 id=long"] + [f"steps=2 id=short{i}" for i in range(40)]
    out: dict = {}
    results = {}
    for i, prompt in enumerate(prompts):
        out[text.submit(ask(prompt))] = i
        while len(out) >= text.in_flight:
            done, _ = wait(out, return_when=FIRST_COMPLETED)
            results.update({out.pop(f): f.result() for f in done})
    results.update({out.pop(f): f.result(timeout=30) for f in list(out)})
    assert [results[i].error for i in range(41)] == [None] * 41
    assert results[5].text == "answer to short4" and results[5].completion_tokens == 3
    assert engine.added_while_running > 30, "requests must be added while others run"
    # The scheduler stays full: every step runs max_running sequences until the work runs out.
    assert engine.batch_sizes[1:20] == [4] * 19
    assert engine.thread_names == {"vllm-feeder"}, "only the feeder thread touches vLLM's engine"


def test_a_request_vllm_refuses_fails_alone(runtime):
    engine = StepEngine()
    results = VllmTextEngine(runtime(engine)).generate([ask("fine"), ask("too long " * 3), ask("fine too")])
    assert [r.error is None for r in results] == [True, False, True]
    assert "vLLM rejected the request" in results[1].error and "max_model_len" in results[1].error


def test_a_dead_engine_fails_what_is_out_and_refuses_more(runtime):
    engine = StepEngine(fail_at_step=3)
    text = VllmTextEngine(runtime(engine))
    futures = [text.submit(ask(f"steps=10 q{i}")) for i in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="illegal memory access"):
            future.result(timeout=10)
    with pytest.raises(RuntimeError, match="vLLM engine stopped.*run the same command again"):
        text.submit(ask("more"))


def test_cancelled_requests_are_aborted_in_vllm(runtime):
    engine = StepEngine(max_running=2, step_s=0.01)
    text = VllmTextEngine(runtime(engine))
    slow = [text.submit(ask(f"steps=500 q{i}")) for i in range(3)]
    deadline = time.monotonic() + 5
    while len(engine.running) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for future in slow:
        future.cancel()
    deadline = time.monotonic() + 5
    while len(engine.aborted) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(engine.aborted) == ["0", "1", "2"]
    assert text.generate([ask("id=after")])[0].text == "answer to after"


def test_engine_args_enable_prefix_caching_and_embeddings_only_for_weakening():
    spec = VllmSpec()
    weaken = engine_args("m", spec, torch.bfloat16, 3, images=True)
    inject = engine_args("m", spec, torch.bfloat16, 3, images=False)
    assert weaken["enable_prefix_caching"] and inject["enable_prefix_caching"]
    assert (weaken["enable_mm_embeds"], inject["enable_mm_embeds"]) == (True, False)
    assert (weaken["limit_mm_per_prompt"], inject["limit_mm_per_prompt"]) == ({"image": 1}, {"image": 0})
    assert weaken["dtype"] == "bfloat16" and weaken["seed"] == 3
    assert spec.in_flight >= 256
    assert not engine_args("m", VllmSpec(enable_prefix_caching=False), torch.float16, 0, False)[
        "enable_prefix_caching"
    ]


def test_only_engines_that_serve_many_requests_at_once_stream(smoke_model_dir, runtime):
    hf = HFTextEngine(LlavaRuntime.load(str(smoke_model_dir), device="cpu", dtype="float32"))
    assert streams(hf) == 0
    assert streams(VllmTextEngine(runtime(StepEngine(), in_flight=300))) == 300


# --- the image prefetch thread ----------------------------------------------------------------


def _scene(i: int) -> Image.Image:
    return Image.new("RGB", (48 + i, 40), (30 * i % 256, 90, 200))


@pytest.fixture(scope="module")
def embedder(smoke_model_dir) -> ImageEmbedder:
    return ImageEmbedder.from_pretrained(str(smoke_model_dir), torch.device("cpu"), torch.float32)


def _vision(i: int) -> VisionRequest:
    return VisionRequest(
        image=_scene(i),
        messages=[{"role": "user", "content": f"steps={1 + i % 3} id={i} what is in this picture?"}],
        sampling=SamplingParams(temperature=0.0),
        view=NoisyView(NoiseSpec(step=500), 7 + i),
        seed=i,
    )


def test_prefetch_thread_embeds_in_chunks_and_vllm_gets_the_same_prompts(runtime, embedder):
    engine = StepEngine(max_running=8)
    text_runtime = runtime(engine, in_flight=16)
    text_runtime.prefetcher = EmbeddingPrefetcher(embedder, text_runtime.feeder, batch=4, poll_s=0.01)
    vision = VllmVisionEngine(text_runtime)
    requests = [_vision(i) for i in range(10)]
    results = vision.generate(requests)
    assert [r.text for r in results] == [f"answer to {i}" for i in range(10)]
    expected = build_vision_requests(requests, embedder)
    got = sorted(engine.prompts.values(), key=lambda p: p["prompt"])
    for sent, want in zip(got, sorted(expected, key=lambda p: p["prompt"])):
        assert sent["prompt"] == want["prompt"]
        assert sent["multi_modal_uuids"] == want["multi_modal_uuids"]
        torch.testing.assert_close(sent["multi_modal_data"]["image"][0], want["multi_modal_data"]["image"][0])
    assert "vllm-feeder" in engine.thread_names and threading.current_thread().name not in engine.thread_names


def test_an_image_that_cannot_be_embedded_fails_alone(runtime, embedder):
    engine = StepEngine()
    rt = runtime(engine)
    rt.prefetcher = EmbeddingPrefetcher(embedder, rt.feeder, batch=8, poll_s=0.01)
    requests = [_vision(0), _vision(1), _vision(2)]
    requests[1].image = Image.new("RGB", (0, 0))  # nothing to resize: the processor raises
    results = VllmVisionEngine(rt).generate(requests)
    assert results[0].error is None and results[2].error is None
    assert "computing the image embedding failed" in results[1].error


def test_generate_answers_in_request_order_whatever_order_vllm_finishes_in(runtime):
    engine = StepEngine(max_running=3)
    text = VllmTextEngine(runtime(engine))
    results = text.generate([ask(f"steps={5 - i % 5} id=q{i}") for i in range(12)])
    assert [r.text for r in results] == [f"answer to q{i}" for i in range(12)]
