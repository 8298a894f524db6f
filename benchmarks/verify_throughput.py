"""Verification throughput: pairs/s of ``bpo-data verify`` with the world verifier on CPU, batched.

End to end, as the command runs it (``bpo_data.verify.folder.verify_folder``): read the shard file,
decode each pair's PNG, read objects with the Object HalBench reader, score every sentence with
open-clip, append and fsync ``verified-*.jsonl``. Two kinds of pairs, from a world made here:

- ``inject``: the rules injector on every answer of the world's held-out scenes (the rewrite repeats
  all but one sentence of the chosen answer);
- ``disjoint``: each pair's rejected answer is the next pair's chosen one (another record), so
  the two answers share no sentence (the worst case, and what weakened answers look like to the cache).

It ends with an estimate, on paper, of the default ViT-B-32 path on a GPU for the full 167,710 pairs.

    python benchmarks/verify_throughput.py            # 2 processes (= 2 cores), one thread each
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from bpo_data.generate import generate
from bpo_data.jsonl import iter_jsonl
from bpo_data.recipe import Recipe
from bpo_data.verify.clip import WORLD, load_scorer
from bpo_data.verify.folder import verify_folder
from bpo_data.verify.objects import objects
from bpo_data.world.make import make_world, source_specs

# The estimate on paper (forward FLOPs = 2 x parameters x tokens; open-clip pads text to 77 tokens).
PAIRS = 167_710
VIT_B32_IMAGE_GFLOP = 8.8  # ViT-B/32 at 224 px: 4.4 G multiply-adds (Radford et al. 2021, table 20)
TEXT_GFLOP = 2 * 37.8e6 * 77 / 1e9  # 12 layers x width 512 (12·512² params each) over 77 tokens: 5.8
SEGMENTS_PER_PAIR = (
    12  # distinct sentences per pair: ShareGPT4V captions ~8–10, QA answers 1–4, shared ones once
)
GPU_TFLOPS = {"A100 (fp16, 312 peak)": 312, "H100 SXM (fp16, 989 peak)": 989}
UTILISATION = 0.3  # small batched matmuls of ViT-B reach roughly a third of peak
DECODE_MS = 8.0  # decode + resize one ~200 KB JPEG to 224 px on one CPU core


def _pairs(world: Path, out: Path, kind: str) -> int:
    split = world / "eval_clean"
    sources = [{**spec, "negatives": {"inject": 1.0}, "turns": "all"} for spec in source_specs(split)]
    recipe = {"name": "bench", "model": "smoke", "sources": sources, "inject": {"injector": "rules"}}
    generate(Recipe.model_validate(recipe), out)
    if kind == "disjoint":  # each rejected answer is the next pair's chosen one (of another record)
        path = next(out.glob("pairs-*.jsonl"))
        records = list(iter_jsonl(path))
        for i, record in enumerate(records):
            record["rejected"] = records[(i + 1) % len(records)]["chosen"]
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return sum(1 for _ in iter_jsonl(next(out.glob("pairs-*.jsonl"))))


def paper_estimate() -> list[str]:
    per_pair = VIT_B32_IMAGE_GFLOP + SEGMENTS_PER_PAIR * TEXT_GFLOP
    total = PAIRS * per_pair * 1e9
    lines = [
        f"paper estimate, ViT-B-32 on a GPU, {PAIRS:,} pairs: {per_pair:.0f} GFLOP/pair "
        f"(image {VIT_B32_IMAGE_GFLOP} + {SEGMENTS_PER_PAIR} x text {TEXT_GFLOP:.1f}) "
        f"= {total / 1e15:.1f} PFLOP"
    ]
    for gpu, peak in GPU_TFLOPS.items():
        seconds = total / (peak * 1e12 * UTILISATION)
        lines.append(f"  {gpu} at {UTILISATION:.0%} of peak: {seconds / 60:.1f} min of GPU time")
    for cores in (8, 16, 32):
        minutes = PAIRS * DECODE_MS / 1e3 / cores / 60
        lines.append(f"  image decoding on {cores} CPU cores ({DECODE_MS} ms each): {minutes:.1f} min")
    return lines


def _shard(folder: str, index: int, num_shards: int, clip_model: str, batch_size: int, results) -> None:
    """One verification process (``bpo-data verify DIR --shard i/N --threads 1``), timed after start-up."""
    import resource

    import torch

    torch.set_num_threads(1)
    scorer = load_scorer(clip_model, None)
    objects("start-up: the WordNet tables load once per process.")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    summary = verify_folder(folder, scorer, (index, num_shards), batch_size)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    results.put((summary.verified, time.perf_counter() - started, cpu_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=300, help="held-out scenes of the world made here")
    parser.add_argument("--processes", type=int, default=2, help="shards verified at once, one thread each")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--clip-model", default=WORLD)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(f"{args.processes} processes (shards i/{args.processes}), 1 torch thread each")
    with tempfile.TemporaryDirectory(prefix="bpo-verify-bench-") as scratch:
        world = Path(scratch) / "world"
        make_world(world, 1, 0, eval_scenes=args.scenes, objhal_scenes=1)
        for kind in ("inject", "disjoint"):
            out = Path(scratch) / kind
            count = _pairs(world, out, kind)
            results = context.Queue()
            workers = [
                context.Process(
                    target=_shard,
                    args=(str(out), i, args.processes, args.clip_model, args.batch_size, results),
                )
                for i in range(args.processes)
            ]
            for worker in workers:
                worker.start()
            done = [results.get() for _ in workers]
            for worker in workers:
                worker.join()
            verified, wall, cpu = sum(d[0] for d in done), max(d[1] for d in done), sum(d[2] for d in done)
            assert verified == count, (verified, count)
            print(
                f"{kind:8s} {count:6d} pairs in {wall:6.1f} s: {count / wall:7.1f} pairs/s "
                f"({1000 * cpu / count:.1f} CPU-ms per pair)"
            )
    for line in paper_estimate():
        print(line)


if __name__ == "__main__":
    main()
