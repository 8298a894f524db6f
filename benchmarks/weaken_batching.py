"""Image weakening, batched vs batch 1: the engine alone, and whole processes end to end.

    python benchmarks/weaken_batching.py [--pairs 1024] [--batch 16] [--max-new-tokens 32] [--threads 1]
                                         [--repeats 3] [--model smoke]

**Whole process** (what a user waits for): ``bpo-data generate`` on a weaken-only recipe at
``run.weaken.batch_size`` = --batch, against a plain batch-1 transformers loop in a process of its own
(this script with ``--plain-loop``: ``LlavaForConditionalGeneration`` + ``AutoProcessor``, one
``generate`` per unit, the same noise draw added to the pixels, one JSON line written per answer).
Both start from nothing (interpreter, imports, model load, reading the source, decoding each
image) and make --pairs answers with greedy decoding, so they generate the same tokens; the script
counts how many answers are identical. Each process runs with --threads CPU threads.

**Engine alone**: ``HFVisionEngine.generate`` in a loop of batch 1 against batches of --batch, in this
process, the model loaded once (what batching buys once start-up is paid).

Images are 640×480 drawn JPEGs (COCO-sized): the processor's resize is a per-image cost that
batching does not shrink.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

SEED = 0
NOISE_STEP = 500
QUESTION = "Describe the image in detail."


def write_source(work: Path, pairs: int) -> tuple[Path, Path]:
    images = work / "images"
    images.mkdir(parents=True)
    for i in range(64):
        image = Image.new("RGB", (640, 480), (i * 4 % 256, 120, 200))
        ImageDraw.Draw(image).rectangle((40 + i, 40, 300, 300 - i), fill=(250, 250 - 3 * i, 0))
        image.save(images / f"{i}.jpg", quality=90)
    data = work / "data.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for i in range(pairs):
            conversation = [
                {"from": "human", "value": f"<image>\n{QUESTION}"},
                {"from": "gpt", "value": f"A yellow rectangle number {i} on a blue background."},
            ]
            handle.write(
                json.dumps({"id": f"r{i}", "image": f"{i % 64}.jpg", "conversations": conversation}) + "\n"
            )
    return data, images


def write_recipe(work: Path, data: Path, images: Path, model: str, batch: int, max_new_tokens: int) -> Path:
    recipe = {
        "name": "weaken-batching",
        "seed": SEED,
        "model": model,
        "sources": [
            {
                "name": "src",
                "format": "llava",
                "data": str(data),
                "image_root": str(images),
                "negatives": {"weaken": 1.0},
            }
        ],
        "weaken": {
            "noise": {"step": NOISE_STEP, "space": "pixel"},
            "sampling": {"temperature": 0.0, "max_new_tokens": max_new_tokens},
        },
        "run": {"device": "cpu", "dtype": "float32", "weaken": {"batch_size": batch}},
    }
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def plain_loop(model_dir: str, data: Path, images: Path, out: Path, max_new_tokens: int) -> None:
    """The baseline: a batch-1 transformers loop, nothing of the pipeline but the noise it must match."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from bpo_data.prompting import llava_prompt
    from bpo_data.recipe import NoiseSpec
    from bpo_data.weaken.negatives import noise_seed
    from bpo_data.weaken.view import add_noise

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    noise = NoiseSpec(step=NOISE_STEP)
    with open(data, encoding="utf-8") as records, open(out, "w", encoding="utf-8") as answers:
        for line in records:
            record = json.loads(line)
            key = f"src/{record['id']}/0"
            image = Image.open(images / record["image"]).convert("RGB")
            prompt = llava_prompt([{"role": "user", "content": QUESTION}])
            inputs = processor(images=[image], text=[prompt], return_tensors="pt")
            inputs["pixel_values"] = add_noise(inputs["pixel_values"][0], noise, noise_seed(key, SEED))[None]
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = output[0, inputs["input_ids"].shape[1] :]
            text = processor.tokenizer.decode(new, skip_special_tokens=True).strip()
            answers.write(json.dumps({"key": f"{key}#weaken", "rejected": text}) + "\n")


def timed_process(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return wall


def answers(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return {r["key"]: r["rejected"] for r in map(json.loads, handle)}


def whole_process(args: argparse.Namespace, model_dir: str, work: Path) -> dict:
    data, images = write_source(work, args.pairs)
    recipe = write_recipe(work, data, images, args.model, args.batch, args.max_new_tokens)
    batched, plain = [], []
    for repeat in range(args.repeats):
        out = work / f"out-{repeat}"
        batched.append(
            timed_process(
                [
                    sys.executable,
                    "-m",
                    "bpo_data",
                    "generate",
                    "--recipe",
                    str(recipe),
                    "--out",
                    str(out),
                    "--no-progress",
                ],
                args.threads,
            )
        )
        loop_out = work / f"plain-{repeat}.jsonl"
        plain.append(
            timed_process(
                [
                    sys.executable,
                    __file__,
                    "--plain-loop",
                    model_dir,
                    str(data),
                    str(images),
                    str(loop_out),
                    "--max-new-tokens",
                    str(args.max_new_tokens),
                ],
                args.threads,
            )
        )
        print(
            f"  repeat {repeat + 1}: batch {args.batch} process {batched[-1]:.1f} s, "
            f"batch-1 loop {plain[-1]:.1f} s",
            flush=True,
        )
    pipeline = {}
    for path in (work / "out-0").glob("*.jsonl"):
        if path.name.startswith(("pairs-", "rejects-")):
            with open(path, encoding="utf-8") as handle:
                for record in map(json.loads, handle):
                    pipeline[record["key"]] = record.get("rejected", f"<reject: {record.get('reason')}>")
    loop = answers(work / "plain-0.jsonl")
    same = sum(pipeline.get(key) == text for key, text in loop.items())
    return {"batched": batched, "plain": plain, "same": same, "total": len(loop), "made": len(pipeline)}


def engine_alone(args: argparse.Namespace, model_dir: str) -> dict:
    import torch

    from bpo_data.engines.base import VisionRequest
    from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime
    from bpo_data.recipe import NoiseSpec, SamplingParams
    from bpo_data.weaken.view import NoisyView

    torch.set_num_threads(args.threads)
    engine = HFVisionEngine(LlavaRuntime.load(model_dir, device="cpu", dtype="float32"))
    images = [Image.new("RGB", (640, 480), (i * 4 % 256, 120, 200)) for i in range(args.engine_requests)]
    requests = [
        VisionRequest(
            image=image,
            messages=[{"role": "user", "content": QUESTION}],
            sampling=SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens),
            view=NoisyView(NoiseSpec(step=NOISE_STEP), seed=i),
            seed=i,
        )
        for i, image in enumerate(images)
    ]
    engine.generate(requests[:2])  # warm-up

    def timed(batch: int) -> float:
        start = time.perf_counter()
        for i in range(0, len(requests), batch):
            engine.generate(requests[i : i + batch])
        return time.perf_counter() - start

    single, batched = [], []
    for _ in range(args.repeats):
        single.append(timed(1))
        batched.append(timed(args.batch))
    return {"single": single, "batched": batched}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine-requests", type=int, default=64, help="requests of the engine-alone timing")
    parser.add_argument("--model", default="smoke", help="'smoke' (the tiny local LLaVA) or a local folder")
    parser.add_argument("--skip", choices=["engine", "process"], help="leave one measurement out")
    parser.add_argument(
        "--plain-loop", nargs=4, metavar=("MODEL", "DATA", "IMAGES", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.plain_loop:
        model_dir, data, images, out = args.plain_loop
        plain_loop(model_dir, Path(data), Path(images), Path(out), args.max_new_tokens)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bpo_data.smoke_model import ensure_smoke_model

    model_dir = str(ensure_smoke_model()) if args.model == "smoke" else args.model
    load = os.getloadavg()
    print(
        f"model={args.model} pairs={args.pairs} batch={args.batch} max_new_tokens={args.max_new_tokens} "
        f"threads={args.threads} repeats={args.repeats}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )

    def mm(values: list[float]) -> str:
        return f"{min(values):.2f} / {statistics.median(values):.2f}"

    if args.skip != "engine":
        engine = engine_alone(args, model_dir)
        ratios = [s / b for s, b in zip(engine["single"], engine["batched"])]
        print(
            f"engine alone, {args.engine_requests} requests (min / median s): "
            f"batch 1 {mm(engine['single'])}, "
            f"batch {args.batch} {mm(engine['batched'])}; speed-up {mm(ratios)}x",
            flush=True,
        )
    if args.skip != "process":
        with tempfile.TemporaryDirectory(prefix="bpo-weaken-bench-") as tmp:
            result = whole_process(args, model_dir, Path(tmp))
        ratios = [p / b for p, b in zip(result["plain"], result["batched"])]
        print(
            f"whole process, {args.pairs} pairs (min / median s): "
            f"batch-1 transformers loop {mm(result['plain'])}, "
            f"bpo-data generate at batch {args.batch} {mm(result['batched'])}; speed-up {mm(ratios)}x"
        )
        print(
            f"identical answers: {result['same']} of {result['total']} (the pipeline made {result['made']})"
        )
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
