"""What one GPU does for the recipe, in one prepared run of under 8 minutes: the hf engine's new tokens/s
at batch 1, 16 and 64 on a LLaVA-1.5-7B-sized model, the image-embedding path of the vllm engine, and
vLLM itself when it is installed; then what the full recipe would cost at the measured rates.

Made for a GPU box with no internet: the model is built from config with random weights (CLIP
ViT-L/14-336 + Llama-2-7B sizes, bf16) and the tokenizer is the smoke model's local BPE, so nothing
is downloaded. Random weights decide nothing about speed; EOS is switched off so every hf request
generates exactly --max-new-tokens and every batch size does the same work per request.

    python benchmarks/gpu_throughput.py                    # on the GPU (about 3–5 min on an H100/H200)
    python benchmarks/gpu_throughput.py --tiny             # CPU check of the script, the smoke model

Sections (each prints as it finishes; one that fails says why and the next runs):

1. **hf engine** — weakening requests (640×480 images, pixel noise at step 500, greedy) at each
   --batch; prefill cost per request, decode ms per step, new tokens/s, and the fraction of the
   card's memory bandwidth a decode step uses (it reads every weight once, plus the KV cache).
2. **image embeddings** (the vllm engine's own path) — the processor, the vision tower + projector
   through a noisy view, and the copy to pinned host memory, per image, in chunks of --embed-batch.
3. **vLLM** (skipped when not installed) — random ("dummy") weights in vLLM, text prompts of the
   injection length and image-embedding prompts streamed through the engine's feeder with
   run.vllm.in_flight requests kept submitted: new tokens/s.
4. **recipe** — GPU-hours for recipes/bpo.yaml at the measured rates (BENCHMARKS.md, "The formula").

The machine needs the package's imports (torch, transformers, pillow, pydantic, pyyaml): on a box
without pydantic, carry its wheels (pydantic, pydantic-core, annotated-types, typing-inspection).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw
from transformers.utils import logging as hf_logging

from bpo_data.engines.base import TextRequest, VisionRequest
from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime
from bpo_data.engines.vllm_engine import ImageEmbedder, to_host
from bpo_data.inject.prompt_files import load_prompt_file, render_messages
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import NoiseSpec, Recipe, SamplingParams, VllmSpec, load_recipe
from bpo_data.schema import Turn, Unit
from bpo_data.smoke_model import ensure_smoke_model, llava_15_7b_config
from bpo_data.weaken.view import NoisyView

# Peak HBM/GDDR bandwidth in TB/s from the vendors' data sheets; first matching name wins.
PEAK_BANDWIDTH_TBS = (
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),
    ("A100-SXM4-80GB", 2.0),
    ("A100 80GB", 2.0),
    ("L40S", 0.864),
    ("A40", 0.696),
)

# Typical lengths per source, in tokens (BENCHMARKS.md, "The work, on paper", says where each comes from).
CHARS_PER_TOKEN = 4.0
TYPICAL_TOKENS = {
    "sharegptv": {"question": 12, "answer": 225, "context": 0},
    "llavar": {"question": 20, "answer": 40, "context": 75},
    "llava-instruct": {"question": 20, "answer": 130, "context": 115},
}
TEMPLATE_TOKENS = 12  # BOS, "USER: ", newline after <image>, " ASSISTANT:"
HF_STATIC_BATCH_TAIL = 1.5  # a static batch decodes until its longest answer: ≈1.5× the mean


def random_llava_7b(device: torch.device) -> LlavaRuntime:
    """A randomly initialised LLaVA-1.5-7B-sized model in bf16, built in place on ``device``."""
    from transformers import LlavaForConditionalGeneration

    processor = _processor_7b()
    config = _config_7b(processor.tokenizer)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    return LlavaRuntime.from_loaded("random-llava-1.5-7b", model, processor)


def _processor_7b():
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    from bpo_data.prompting import LLAVA_CHAT_TEMPLATE

    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(ensure_smoke_model()),
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


def _config_7b(tokenizer):
    from bpo_data.prompting import IMAGE_TOKEN

    return llava_15_7b_config(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id)


def drawn_image(i: int) -> Image.Image:
    image = Image.new("RGB", (640, 480), (i * 7 % 256, 120, 200))
    ImageDraw.Draw(image).rectangle((40 + i % 200, 40, 300, 300), fill=(250, 250, 0))
    return image


def weakening_requests(n: int, max_new_tokens: int) -> list[VisionRequest]:
    """``n`` distinct COCO-sized drawn images, each with its own noise draw; greedy, so every batch size
    generates the same tokens."""
    return [
        VisionRequest(
            image=drawn_image(i),
            messages=[{"role": "user", "content": "Describe the image in detail."}],
            sampling=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens),
            view=NoisyView(NoiseSpec(step=500), seed=i),
            seed=i,
        )
        for i in range(n)
    ]


@dataclass
class Run:
    batch: int
    seconds: float
    prefill_seconds: float
    new_tokens: int
    prompt_tokens: int
    requests: int
    max_new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds

    @property
    def step_seconds(self) -> float:
        """One decode step of one batch: the full run minus its prefill-only twin, per step."""
        batches = -(-self.requests // self.batch)
        return (self.seconds - self.prefill_seconds) / (batches * (self.max_new_tokens - 1))

    @property
    def prefill_seconds_per_token(self) -> float:
        return self.prefill_seconds / self.prompt_tokens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(engine: HFVisionEngine, requests: list[VisionRequest], batch: int) -> tuple[float, int, int]:
    _sync(engine.runtime.device)
    start = time.perf_counter()
    new = prompt = 0
    for i in range(0, len(requests), batch):
        for result in engine.generate(requests[i : i + batch]):
            new += result.completion_tokens
            prompt += result.prompt_tokens
    _sync(engine.runtime.device)
    return time.perf_counter() - start, new, prompt


def measure(engine: HFVisionEngine, requests: int, batch: int, max_new_tokens: int, repeats: int) -> Run:
    """The fastest of ``repeats`` timings of each pass: other load on the machine only adds time."""
    _timed(engine, weakening_requests(batch, 2), batch)  # warm-up at this batch size: kernels, allocator
    prefill = min(
        (_timed(engine, weakening_requests(requests, 1), batch) for _ in range(repeats)), key=lambda t: t[0]
    )
    full = min(
        (_timed(engine, weakening_requests(requests, max_new_tokens), batch) for _ in range(repeats)),
        key=lambda t: t[0],
    )
    return Run(batch, full[0], prefill[0], full[1], prefill[2], requests, max_new_tokens)


def peak_bandwidth(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-bandwidth"
    if device.type != "cuda":
        return None, "CPU"
    name = torch.cuda.get_device_name(device)
    return next((tbs for key, tbs in PEAK_BANDWIDTH_TBS if key in name), None), name


def decode_bytes(runtime: LlavaRuntime, run: Run) -> tuple[float, float]:
    """Bytes one decode step reads: the language model's weights (not the input embedding table:
    a step reads one row of it), and the KV cache of every sequence in the batch."""
    lm = runtime.model.model.language_model
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    weights -= lm.embed_tokens.weight.numel() * lm.embed_tokens.weight.element_size()
    head = runtime.model.lm_head.weight
    weights += head.numel() * head.element_size()
    config = runtime.model.config.text_config
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * head.element_size()
    context = run.prompt_tokens / run.requests + run.max_new_tokens / 2
    return float(weights), float(per_token * context * run.batch)


def hf_section(runtime: LlavaRuntime, args: argparse.Namespace, peak: float | None) -> list[Run]:
    engine = HFVisionEngine(runtime)
    runs = []
    for batch in args.batch:
        requests = max(batch, args.min_requests)
        run = measure(engine, requests, batch, args.max_new_tokens, args.repeats)
        runs.append(run)
        line = (
            f"  batch {batch:3d}: {requests:3d} requests in {run.seconds:7.2f} s  "
            f"{run.tokens_per_s:9.1f} new tokens/s"
            f"  prefill {run.prefill_seconds / run.requests * 1e3:7.1f} ms/request"
        )
        if run.step_seconds > 0:
            weights, kv = decode_bytes(runtime, run)
            steps = 1 / run.step_seconds
            line += f"  decode {run.step_seconds * 1e3:7.2f} ms/step"
            if peak is not None:
                line += (
                    f"  bandwidth: weights {steps * weights / (peak * 1e12):5.1%}, "
                    f"+KV {steps * (weights + kv) / (peak * 1e12):5.1%} of {peak} TB/s"
                )
        print(line, flush=True)
    for run in runs[1:]:
        print(
            f"  speed-up, batch {run.batch} vs {runs[0].batch}: "
            f"{run.tokens_per_s / runs[0].tokens_per_s:.1f}x"
        )
    return runs


def embedding_section(runtime: LlavaRuntime, args: argparse.Namespace) -> float:
    """Seconds per image of the vllm engine's embedding path, in chunks of ``--embed-batch``."""
    embedder = ImageEmbedder(
        runtime.model.model, runtime.processor.image_processor, chunk_size=args.embed_batch
    )
    device = runtime.device
    images = [drawn_image(i) for i in range(args.embed_images)]
    views = [NoisyView(NoiseSpec(step=500), seed=i) for i in range(len(images))]
    embedder.embed(images[: args.embed_batch], views[: args.embed_batch])  # warm-up
    timings: dict[str, list[float]] = {"processor": [], "tower + projector": [], "to pinned host": []}
    for start in range(0, len(images), args.embed_batch):
        chunk, chunk_views = images[start : start + args.embed_batch], views[start : start + args.embed_batch]
        began = time.perf_counter()
        pixels = embedder.pixels(chunk)
        timings["processor"].append(time.perf_counter() - began)
        _sync(device)
        began = time.perf_counter()
        out = embedder.features(pixels, chunk_views)
        _sync(device)
        timings["tower + projector"].append(time.perf_counter() - began)
        began = time.perf_counter()
        to_host(out)
        timings["to pinned host"].append(time.perf_counter() - began)
    total = 0.0
    for name, values in timings.items():
        per_image = sum(values) / len(images)
        total += per_image
        print(f"  {name:18s}: {per_image * 1e3:7.2f} ms/image")
    shape = tuple(out[0].shape)
    print(
        f"  total             : {total * 1e3:7.2f} ms/image = {1 / total:7.1f} images/s "
        f"({len(images)} images, chunks of {args.embed_batch}, embedding {shape} {out[0].dtype})"
    )
    return total


def vllm_section(args: argparse.Namespace, peak: float | None) -> float | None:
    """New tokens/s of vLLM through the engine's feeder, text and image prompts, dummy weights."""
    from vllm import EngineArgs, LLMEngine

    from bpo_data.engines.vllm_engine import (
        EmbeddingPrefetcher,
        VllmFeeder,
        VllmRuntime,
        VllmTextEngine,
        VllmVisionEngine,
        engine_args,
    )

    processor = _processor_7b()
    config = _config_7b(processor.tokenizer)
    spec = VllmSpec(max_model_len=2048)
    with tempfile.TemporaryDirectory(prefix="bpo-vllm-bench-") as folder:
        config.save_pretrained(folder)
        processor.save_pretrained(folder)
        kwargs = engine_args(folder, spec, torch.bfloat16, 0, images=True) | {"load_format": "dummy"}
        started = time.perf_counter()
        engine = LLMEngine.from_engine_args(EngineArgs(**kwargs))
        print(f"  engine start-up: {time.perf_counter() - started:.1f} s", flush=True)
        embedder = ImageEmbedder.from_config(
            config, processor.image_processor, torch.device("cuda"), torch.bfloat16
        )
        feeder = VllmFeeder(engine)
        runtime = VllmRuntime(
            "dummy", feeder, EmbeddingPrefetcher(embedder, feeder, spec.embed_batch), spec.in_flight
        )
        try:
            inject = _inject_text_requests(args.vllm_requests, args.max_new_tokens)
            rates = []
            for name, engine_, requests in (
                ("text (injection prompts)", VllmTextEngine(runtime), inject),
                (
                    "images (weakening)",
                    VllmVisionEngine(runtime),
                    weakening_requests(args.vllm_requests, args.max_new_tokens),
                ),
            ):
                engine_.generate(requests[:8])  # warm-up
                began = time.perf_counter()
                results = _stream(engine_, requests)
                seconds = time.perf_counter() - began
                new = sum(r.completion_tokens for r in results)
                errors = sum(r.error is not None for r in results)
                rates.append(new / seconds)
                print(
                    f"  {name:26s}: {len(requests)} requests in {seconds:6.1f} s  "
                    f"{new / seconds:9.1f} new tokens/s"
                    f"  ({new / len(requests):.0f} new tokens each{f', {errors} errors' if errors else ''})",
                    flush=True,
                )
            return statistics.mean(rates)
        finally:
            runtime.close()


def _stream(engine, requests: list) -> list:
    """Keep ``engine.in_flight`` requests submitted, as the pipeline's make step does."""
    from concurrent.futures import FIRST_COMPLETED, wait

    out, done = {}, {}
    for i, request in enumerate(requests):
        out[engine.submit(request)] = i
        while len(out) >= engine.in_flight:
            finished, _ = wait(out, return_when=FIRST_COMPLETED)
            done.update({out.pop(f): f.result() for f in finished})
    done.update({out.pop(f): f.result() for f in list(out)})
    return [done[i] for i in range(len(requests))]


def _inject_text_requests(n: int, max_new_tokens: int) -> list[TextRequest]:
    prompt = load_prompt_file("description")
    return [
        TextRequest(
            messages=render_messages(prompt, _typical_unit("description", TYPICAL_TOKENS["sharegptv"], i)),
            sampling=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens),
            seed=i,
        )
        for i in range(n)
    ]


def _typical_unit(style: str, typical: dict[str, int], i: int = 0) -> Unit:
    answer = f"answer {i} " + "word " * int(typical["answer"] * CHARS_PER_TOKEN / 5)
    question = "word " * int(typical["question"] * CHARS_PER_TOKEN / 5)
    context = (
        (Turn("word", "word " * int(typical["context"] * CHARS_PER_TOKEN / 5)),) if typical["context"] else ()
    )
    return Unit("k", "s", "r", 0, "i.jpg", ".", question, answer, context=context, style=style)


def recipe_cost(recipe: Recipe, run: Run, image_tokens: int, gpus: int, unit: str) -> None:
    """GPU-hours for the recipe's units at this run's per-token costs (BENCHMARKS.md, "The formula")."""
    tail = 1.0 if run.batch == 1 else HF_STATIC_BATCH_TAIL
    total_hours = 0.0
    for source in recipe.sources:
        typical = TYPICAL_TOKENS.get(source.format) or TYPICAL_TOKENS["llava-instruct"]
        ratios = {"weaken": 1.0, "inject": 1.0} if source.negatives == "both" else source.negatives
        prompts = {
            "weaken": image_tokens + typical["question"] + typical["context"] + TEMPLATE_TOKENS,
            "inject": len(
                llava_prompt(
                    render_messages(
                        load_prompt_file(recipe.inject.prompts[source.style]),
                        _typical_unit(source.style, typical),
                    ),
                    with_image=False,
                )
            )
            / CHARS_PER_TOKEN,
        }
        for kind, ratio in ratios.items():
            count = (source.quota or 0) * ratio
            seconds = count * (
                prompts[kind] * run.prefill_seconds_per_token
                + tail * typical["answer"] * run.step_seconds / run.batch
            )
            total_hours += seconds / 3600
    print(
        f"  hf at batch {run.batch:3d}: {total_hours:8.1f} {unit} = "
        f"{total_hours / gpus:6.1f} h on {gpus} devices"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the smoke model on the CPU (checks the script)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=None, help="sizes (1 16 64; 1 4 16 with --tiny)"
    )
    parser.add_argument("--min-requests", type=int, default=8, help="requests per size, at least the batch")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timings per pass, fastest kept (1; 3 with --tiny)"
    )
    parser.add_argument("--embed-images", type=int, default=256)
    parser.add_argument("--embed-batch", type=int, default=VllmSpec().embed_batch)
    parser.add_argument("--vllm-requests", type=int, default=1024)
    parser.add_argument(
        "--peak-bandwidth", type=float, default=None, help="TB/s, if the card is not in the table"
    )
    parser.add_argument("--recipe", default="bpo", help="recipe whose full cost is estimated")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs for the wall-clock estimate")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    began = time.perf_counter()
    if args.tiny:
        runtime = LlavaRuntime.load(str(ensure_smoke_model()), device="cpu", dtype="float32")
        label = "smoke model (tiny, random), float32"
        args.batch = args.batch or [1, 4, 16]
        args.embed_images = min(args.embed_images, 64)
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU: run with --tiny to check the script on the CPU")
        runtime = random_llava_7b(torch.device("cuda"))
        label = "random LLaVA-1.5-7B-sized, bf16"
        args.batch = args.batch or [1, 16, 64]
    args.repeats = args.repeats or (3 if args.tiny else 1)
    runtime.model.generation_config.eos_token_id = None  # every request makes exactly max_new_tokens
    params = sum(p.numel() for p in runtime.model.parameters())
    peak, card = peak_bandwidth(runtime.device, args.peak_bandwidth)
    print(
        f"model: {label}, {params / 1e6:,.1f}M parameters; device {card}; {torch.get_num_threads()} threads"
    )
    print(f"built in {time.perf_counter() - began:.1f} s")

    print(
        "\n1. hf engine: weakening requests, 640x480 images, pixel noise step 500, "
        f"{args.max_new_tokens} new tokens"
    )
    runs = hf_section(runtime, args, peak)
    print(f"\n2. image embeddings (the vllm engine's path), {time.perf_counter() - began:.0f} s so far")
    embedding_section(runtime, args)
    print(f"\n3. vLLM, {time.perf_counter() - began:.0f} s so far")
    if args.tiny or not torch.cuda.is_available():
        print("  skipped: vLLM runs on a CUDA GPU")
    elif importlib.util.find_spec("vllm") is None:
        print("  skipped: vLLM is not installed (pip install 'bpo-data[vllm]')")
    else:
        del runtime.model
        torch.cuda.empty_cache()
        try:
            vllm_section(args, peak)
        except Exception as err:  # noqa: BLE001 - the other sections' figures still stand
            print(f"  failed: {type(err).__name__}: {err}")
    print(f"\n4. the full recipe {args.recipe!r} at these rates (token lengths assumed, BENCHMARKS.md)")
    unit = "GPU-h" if runtime.device.type == "cuda" else "CPU-h"
    image_tokens = 576 if not args.tiny else (336 // 14) ** 2
    for run in (r for r in (runs[0], runs[-1]) if r.step_seconds > 0):
        recipe_cost(load_recipe(args.recipe), run, image_tokens, args.gpus, unit)
    if args.tiny:
        print(
            f"  (the smoke model has {params / 1e6:.1f}M parameters, LLaVA-1.5-7B 7,063M: "
            "this only checks the formula)"
        )
    print(f"\ndone in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
