"""Model-path efficiency: the shard pipeline's generated tokens/s against a bare ``model.generate`` loop
at the same batch size on the same prompts.

    python benchmarks/model_path.py [--units 1024] [--batch 16] [--max-new-tokens 32] [--repeats 3]
    python benchmarks/model_path.py --recipe RECIPE.yaml [--units 0]   # any recipe, as it is
    python benchmarks/model_path.py --world W [--units 200]            # the miniature world's recipe

**Pipeline**: ``bpo_data.generate.generate`` in this process — reading the source, sampling, decoding
each image, the noise view, the hf engine at ``run.weaken.batch_size`` = --batch, the writer. Its
generated tokens are the engine's own count (``weaken generated tokens`` in the run summary).

**Bare loop**: ``LlavaForConditionalGeneration.generate`` on the first --bare-units prompts the
pipeline weakened, in the order it met them (pairs and ``weaken:identical`` rejects: their units read
back from the sources, their noise draws from the unit keys), in batches of --batch with left
padding; only the ``generate`` calls are timed (inputs are prepared outside the timer), so it is
what the model alone can do.

Efficiency = pipeline tokens/s ÷ bare tokens/s. It is printed over the whole ``generate`` call (model
load included; Python imports are done before either timing) and after start-up (the time until the
first pair is written, less one bare batch), which a full run pays once.

Without --recipe the source is synthetic (one-turn records, --image-size JPEGs, 640×480 by default:
COCO-sized; the miniature world draws 96×96) and the model is the smoke model (``model: smoke``);
with --recipe the recipe runs as it is, with --units as every source's quota when given (0: the
recipe's own quotas); --world W (a world from ``bpo-data world make``) writes the miniature world's
recipe for W's training split first: the reproduction's (``bpo-train world-repro``) weakened pairs,
both negatives, the shipped world model weakening at step 500 (temperature 0.2, 128 new tokens),
``rules`` injection.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image, ImageDraw

QUESTION = "Describe the image in detail."


def synthetic_recipe(
    work: Path, units: int, max_new_tokens: int, temperature: float, size: tuple[int, int]
) -> Path:
    images = work / "images"
    images.mkdir(parents=True)
    width, height = size
    for i in range(64):
        image = Image.new("RGB", size, (i * 4 % 256, 120, 200))
        box = (width * (0.05 + i / 640), height * 0.1, width * 0.5, height * (0.7 - i / 640))
        ImageDraw.Draw(image).ellipse(box, fill=(250, 250 - 3 * i, 0))
        image.save(images / f"{i}.jpg", quality=90)
    data = work / "data.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for i in range(units):
            conversation = [
                {"from": "human", "value": f"<image>\n{QUESTION}"},
                {"from": "gpt", "value": f"A yellow ellipse, number {i}, on a blue background."},
            ]
            handle.write(
                json.dumps({"id": f"r{i}", "image": f"{i % 64}.jpg", "conversations": conversation}) + "\n"
            )
    recipe = {
        "name": "model-path",
        "seed": 0,
        "model": "smoke",
        "sources": [
            {
                "name": "src",
                "format": "llava",
                "data": str(data),
                "image_root": str(images),
                "negatives": {"weaken": 1.0},
            }
        ],
        "weaken": {"sampling": {"temperature": temperature, "max_new_tokens": max_new_tokens}},
        "run": {"device": "cpu"},
    }
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def world_recipe(world: Path, work: Path) -> Path:
    """The reproduction's own recipe of weakened pairs (``trainer_min.world_repro.recipe_for``) over
    ``world``'s training split, written where --recipe would read it."""
    from trainer_min.world_repro import ReproSettings, recipe_for

    recipe = recipe_for(world, "world", ReproSettings(), noise_step=500, negatives="both")
    path = work / "world.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


def run_pipeline(recipe, out: Path) -> dict:
    from bpo_data.generate import generate

    marks: dict[str, float] = {}

    def progress(advance: int, total: int) -> None:
        now = time.perf_counter()
        marks.setdefault("planned", now)
        if advance:
            marks.setdefault("first write", now)

    start = time.perf_counter()
    summary = generate(recipe, out, progress=progress)
    wall = time.perf_counter() - start
    tokens = summary.steps.get("make negatives", {}).get("weaken generated tokens", 0)
    return {
        "wall": wall,
        "tokens": tokens,
        "pairs": summary.pairs_written,
        "rejects": dict(summary.rejects),
        "first_write": marks.get("first write", start) - start,
        "planned": marks.get("planned", start) - start,
    }


def weakened_units(recipe, out: Path, units: int) -> list:
    """The first ``units`` units the pipeline weakened, in the order it met them (its batches).

    Pairs and ``weaken:identical`` rejects alike: a weakened answer equal to the truth is dropped
    after the model wrote it, so the bare loop must generate it too, or it would time an easier mix
    (descriptions run long, short answers are the ones that come out identical).
    """
    from bpo_data.generate import source_reader
    from bpo_data.jsonl import iter_jsonl
    from bpo_data.schema import Unit, unit_key_of

    weakened: set[str] = set()
    for path in sorted(out.glob("pairs-*.jsonl")):
        weakened |= {r["unit_key"] for r in iter_jsonl(path) if r["negative_type"] == "weaken"}
    for path in sorted(out.glob("rejects-*.jsonl")):
        weakened |= {
            unit_key_of(r["key"])
            for r in iter_jsonl(path)
            if r.get("negative_type") == "weaken" and r["reason"] == "weaken:identical"
        }
    read = source_reader(recipe, {})
    found = []
    for spec in recipe.sources:
        for unit in read(spec):
            if isinstance(unit, Unit) and unit.key in weakened:
                found.append(unit)
                if len(found) == units:
                    return found
    return found


def bare_loop(recipe, out: Path, units: int, batch: int) -> dict:
    """``model.generate`` alone, timed per call, on the prompts the pipeline weakened, in its order."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from bpo_data.models import resolve_model
    from bpo_data.prompting import llava_prompt
    from bpo_data.weaken.negatives import noise_seed
    from bpo_data.weaken.view import NoisyView

    model_dir, sampling, noise = resolve_model(recipe.model), recipe.weaken.sampling, recipe.weaken.noise
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    pad = processor.tokenizer.pad_token_id
    chosen = weakened_units(recipe, out, units)
    kwargs = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": pad}
    if sampling.temperature > 0:
        kwargs |= {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
    else:
        kwargs |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    seconds, tokens = 0.0, 0
    for start in range(0, len(chosen), batch):
        chunk = chosen[start : start + batch]
        images = [Image.open(Path(u.image_root) / u.image).convert("RGB") for u in chunk]
        inputs = processor(
            images=images, text=[llava_prompt(u.messages()) for u in chunk], padding=True, return_tensors="pt"
        )
        inputs["pixel_values"] = torch.stack(
            [
                NoisyView(noise, noise_seed(u.key, recipe.seed)).pixels(px)
                for u, px in zip(chunk, inputs["pixel_values"])
            ]
        )
        began = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**inputs, **kwargs)
        seconds += time.perf_counter() - began
        tokens += int((output[:, inputs["input_ids"].shape[1] :] != pad).sum())
    return {"seconds": seconds, "tokens": tokens, "units": len(chosen), "batches": -(-len(chosen) // batch)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe", help="a recipe to run as it is (default: a synthetic source, the smoke model)"
    )
    parser.add_argument(
        "--units", type=int, default=1024, help="synthetic units, or every source's quota (0: keep)"
    )
    parser.add_argument("--world", type=Path, help="a world from `bpo-data world make`: run its recipe")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="synthetic recipe only")
    parser.add_argument("--temperature", type=float, default=0.0, help="synthetic recipe only (0: greedy)")
    parser.add_argument("--image-size", default="640x480", help="synthetic recipe only: WIDTHxHEIGHT")
    parser.add_argument("--bare-units", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from bpo_data.recipe import load_recipe, with_settings

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # Imports are process start-up (weaken_batching.py times whole processes), not the model path:
    # both timings below start with them done.
    from transformers import AutoProcessor, LlavaForConditionalGeneration  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="bpo-model-path-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        size = tuple(int(side) for side in args.image_size.lower().split("x"))
        if args.world:
            args.recipe = world_recipe(args.world, work)
        path = args.recipe or synthetic_recipe(work, args.units, args.max_new_tokens, args.temperature, size)
        recipe = with_settings(load_recipe(str(path)), weaken_batch_size=args.batch, device="cpu")
        if args.recipe and args.units:
            recipe = recipe.model_copy(
                update={"sources": [s.model_copy(update={"quota": args.units}) for s in recipe.sources]}
            )
        load = os.getloadavg()
        print(
            f"recipe {recipe.name!r} model {recipe.model!r} batch {args.batch} threads {args.threads}; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            flush=True,
        )
        rows = []
        for repeat in range(args.repeats):
            # Pipeline and bare loop back to back, each repeat: the machine's load changes over minutes.
            out = work / f"out-{repeat}"
            pipeline = run_pipeline(recipe, out)
            bare = bare_loop(recipe, out, args.bare_units, args.batch)
            rows.append(efficiency(pipeline, bare))
            row = rows[-1]
            print(
                f"  repeat {repeat + 1}: pipeline {pipeline['pairs']} pairs, {pipeline['tokens']} tokens in "
                f"{pipeline['wall']:.1f} s (first pair written at {pipeline['first_write']:.1f} s, rejects "
                f"{pipeline['rejects'] or 'none'}); bare {bare['units']} prompts, {bare['tokens']} tokens in "
                f"{bare['seconds']:.1f} s; tokens/s bare {row['bare']:.1f}, pipeline {row['whole']:.1f} / "
                f"{row['steady']:.1f} after start-up",
                flush=True,
            )

    def mm(key: str) -> str:
        values = [row[key] for row in rows]
        return f"{min(values):.3f} / {statistics.median(values):.3f}"

    print(
        f"pipeline efficiency (min / median of {len(rows)}): {mm('whole_eff')} (whole call), "
        f"{mm('steady_eff')} (after start-up)"
    )
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def efficiency(pipeline: dict, bare: dict) -> dict[str, float]:
    bare_rate = bare["tokens"] / bare["seconds"]
    whole = pipeline["tokens"] / pipeline["wall"]
    startup = max(pipeline["first_write"] - bare["seconds"] / bare["batches"], 0.0)
    steady = pipeline["tokens"] / (pipeline["wall"] - startup)
    return {
        "bare": bare_rate,
        "whole": whole,
        "steady": steady,
        "whole_eff": whole / bare_rate,
        "steady_eff": steady / bare_rate,
    }


if __name__ == "__main__":
    main()
