"""Image weakening with the hf engine on a LLaVA-1.5-7B-sized model: batched vs batch 1, tokens/s,
how close decode gets to the GPU's memory-bandwidth limit, and what the full recipe would cost.

Made for a GPU box with no internet and no vLLM: the model is built from config with random weights
(CLIP ViT-L/14-336 + Llama-2-7B sizes, bf16) and the tokenizer is the smoke model's local BPE, so
nothing is downloaded. Random weights decide nothing about speed; EOS is switched off so every
request generates exactly --max-new-tokens and both paths do the same work.

Decode reads every weight once per step, so a step costs at least 2 bytes × parameters (bf16) over
the card's peak bandwidth; the printed fraction is that floor over the measured step time (and,
second figure, with the KV cache the step also reads).

    python benchmarks/gpu_throughput.py                    # on the GPU: batch 1 vs 32
    python benchmarks/gpu_throughput.py --batch 16 32 --requests 64 --max-new-tokens 128
    python benchmarks/gpu_throughput.py --tiny --batch 4 16  # CPU check with the smoke model
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw
from transformers.utils import logging as hf_logging

from bpo_data.engines.base import VisionRequest
from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime
from bpo_data.negatives.prompt_files import load_prompt_file, render_messages
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import NoiseSpec, Recipe, SamplingParams, load_recipe
from bpo_data.schema import Turn, Unit
from bpo_data.smoke_model import ensure_smoke_model, llava_15_7b_config

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

# Typical lengths per source, in tokens (BENCHMARKS-throughput.md says where each comes from).
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
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    from bpo_data.prompting import IMAGE_TOKEN, LLAVA_CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(ensure_smoke_model())
    config = llava_15_7b_config(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.pad_token_id)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return LlavaRuntime(model_id="random-llava-1.5-7b", model=model, processor=processor, device=device)


def weakening_requests(n: int, max_new_tokens: int) -> list[VisionRequest]:
    """``n`` distinct drawn images, each with its own noise draw; greedy, so batch sizes do equal work."""
    out = []
    for i in range(n):
        image = Image.new("RGB", (640, 480), (i * 7 % 256, 120, 200))
        ImageDraw.Draw(image).rectangle((40 + i % 200, 40, 300, 300), fill=(250, 250, 0))
        out.append(
            VisionRequest(
                image=image,
                messages=[{"role": "user", "content": "Describe the image in detail."}],
                sampling=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens),
                noise=NoiseSpec(step=500),
                noise_seed=i,
            )
        )
    return out


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


def _timed(engine: HFVisionEngine, requests: list[VisionRequest], batch: int) -> tuple[float, int, int]:
    cuda = engine.runtime.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    new = prompt = 0
    for i in range(0, len(requests), batch):
        for result in engine.generate(requests[i : i + batch]):
            new += result.completion_tokens
            prompt += result.prompt_tokens
    if cuda:
        torch.cuda.synchronize()
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
    for key, tbs in PEAK_BANDWIDTH_TBS:
        if key in name:
            return tbs, name
    return None, name


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


def recipe_cost(recipe: Recipe, run: Run, image_tokens: int, gpus: int, unit: str) -> None:
    """GPU-hours for the recipe's units at this run's per-token costs (BENCHMARKS-throughput.md)."""
    tail = 1.0 if run.batch == 1 else HF_STATIC_BATCH_TAIL
    print(
        f"\nfull recipe {recipe.name!r} at batch {run.batch} "
        "(token lengths assumed, see BENCHMARKS-throughput.md):"
    )
    total_hours = 0.0
    for source in recipe.sources:
        typical = TYPICAL_TOKENS.get(source.format) or TYPICAL_TOKENS["llava-instruct"]
        ratios = {"weaken": 1.0, "inject": 1.0} if source.negatives == "both" else source.negatives
        units = source.quota or 0
        answer = typical["answer"]
        prompts = {
            "weaken": image_tokens + typical["question"] + typical["context"] + TEMPLATE_TOKENS,
            "inject": _inject_prompt_tokens(recipe, source.style, typical),
        }
        for kind, ratio in ratios.items():
            count = units * ratio
            seconds = count * (
                prompts[kind] * run.prefill_seconds_per_token + tail * answer * run.step_seconds / run.batch
            )
            total_hours += seconds / 3600
            print(
                f"  {source.name:15s} {kind:6s} {count:8.0f} units × ({prompts[kind]:5.0f} prompt + "
                f"{answer:4d} new tokens) → {seconds / 3600:8.1f} {unit}"
            )
    print(f"  total {total_hours:.1f} {unit} = {total_hours / gpus:.1f} h on {gpus} devices")


def _inject_prompt_tokens(recipe: Recipe, style: str, typical: dict[str, int]) -> float:
    prompt = load_prompt_file(recipe.inject.prompts[style])
    filler = "word " * int(typical["answer"] * CHARS_PER_TOKEN / 5)
    question = "word " * int(typical["question"] * CHARS_PER_TOKEN / 5)
    context = (
        (Turn("word", "word " * int(typical["context"] * CHARS_PER_TOKEN / 5)),) if typical["context"] else ()
    )
    unit = Unit("k", "s", "r", 0, "i.jpg", ".", question, filler, context=context, style=style)
    return len(llava_prompt(render_messages(prompt, unit), with_image=False)) / CHARS_PER_TOKEN


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the smoke model on the CPU (checks the script)")
    parser.add_argument(
        "--batch", type=int, nargs="+", help="sizes compared with batch 1 (32; 16 with --tiny)"
    )
    parser.add_argument("--requests", type=int, default=None, help="default: the largest batch")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (128 with --tiny)")
    parser.add_argument(
        "--peak-bandwidth", type=float, default=None, help="TB/s, if the card is not in the table"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timings per pass, fastest kept (1; 3 with --tiny)"
    )
    parser.add_argument("--recipe", default="bpo", help="recipe whose full cost is estimated")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs for the wall-clock estimate")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.tiny:
        runtime = LlavaRuntime.load(str(ensure_smoke_model()), device="cpu", dtype="float32")
        label = "smoke model (tiny, random)"
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU: run with --tiny to check the script on the CPU")
        runtime = random_llava_7b(torch.device("cuda"))
        label = "random LLaVA-1.5-7B-sized (bf16)"
    runtime.model.generation_config.eos_token_id = None  # every request makes exactly max_new_tokens
    engine = HFVisionEngine(runtime)
    batches = sorted(set(args.batch or [16 if args.tiny else 32]) - {1})
    if not batches:
        parser.error("--batch needs at least one size above 1: every size is compared with batch 1")
    requests = args.requests or max(batches)
    max_new = args.max_new_tokens or (128 if args.tiny else 64)
    params = sum(p.numel() for p in runtime.model.parameters())
    peak, card = peak_bandwidth(runtime.device, args.peak_bandwidth)
    print(
        f"model: {label}, {params / 1e6:,.1f}M parameters, device {card}, threads {torch.get_num_threads()}"
    )
    print(f"{requests} requests, pixel noise step 500, greedy, exactly {max_new} new tokens each")
    repeats = args.repeats or (3 if args.tiny else 1)
    runs = [measure(engine, requests, b, max_new, repeats) for b in [1, *batches]]
    for run in runs:
        if run.step_seconds <= 0:
            print(f"batch {run.batch:3d}: timing noise exceeds the decode time; raise --max-new-tokens")
            continue
        weights, kv = decode_bytes(runtime, run)
        steps = 1 / run.step_seconds
        line = (
            f"batch {run.batch:3d}: {run.seconds:7.2f} s  {run.tokens_per_s:8.1f} new tokens/s  "
            f"prefill {run.prefill_seconds / run.requests * 1e3:7.1f} ms/request  "
            f"decode {run.step_seconds * 1e3:7.2f} ms/step ({steps * run.batch:7.1f} tokens/s)"
        )
        if peak is not None:
            limit = peak * 1e12
            line += (
                f"  bandwidth: weights {steps * weights / limit:5.1%}"
                f", weights+KV {steps * (weights + kv) / limit:5.1%} of {peak} TB/s"
            )
        print(line)
    for run in runs[1:]:
        print(
            f"speed-up, batch {run.batch} vs 1: {run.tokens_per_s / runs[0].tokens_per_s:.1f}x new tokens/s"
        )
    if peak is None:
        print("bandwidth fraction: unknown card; pass --peak-bandwidth TB/s")
    recipe = load_recipe(args.recipe)
    for run in (r for r in (runs[0], runs[-1]) if r.step_seconds > 0):
        unit = "GPU-h" if runtime.device.type == "cuda" else "CPU-h"
        recipe_cost(recipe, run, runtime.model.config.image_seq_length, args.gpus, unit)
    if args.tiny:
        print(
            f"\n(the smoke model has {params / 1e6:.1f}M parameters, LLaVA-1.5-7B 7,063M: "
            "these hours only exercise the formula)"
        )


if __name__ == "__main__":
    main()
