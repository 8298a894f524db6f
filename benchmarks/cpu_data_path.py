"""Full-scale CPU data path: synthetic records in the three real formats → rules injector → export.

Prints wall time, pairs/s and peak RSS for each step and size, so "flat as N grows" can be read off
side by side. Usage:

    python benchmarks/cpu_data_path.py --sizes 20000 167710 [--work DIR]

Each size writes ShareGPT4V (JSON array, sub-folder image paths), LLaVAR (JSONL) and
LLaVA-Instruct (JSON array, multi-turn) records in the paper's proportions, pointing at a pool of
small drawn images, then runs ``bpo-data generate`` (rules injector, inject only: the model-free
path) and ``bpo-data export`` as separate processes and reads each one's own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

PAPER = {"sharegptv": 57906, "llavar": 55445, "llava-instruct": 54359}
OBJECTS = [
    "dog",
    "cat",
    "car",
    "bus",
    "person",
    "chair",
    "cup",
    "bicycle",
    "horse",
    "bench",
    "bottle",
    "truck",
]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown"]
WHERE = ["to the left of", "to the right of", "above", "below", "in front of", "behind"]
POOL = 2000


def _sentence(rng: random.Random) -> str:
    n = rng.randint(1, 5)
    return (
        f"There are {n} {rng.choice(COLOURS)} {rng.choice(OBJECTS)}s {rng.choice(WHERE)} a "
        f"{rng.choice(COLOURS)} {rng.choice(OBJECTS)}, and a sign that reads OPEN {rng.randint(10, 99)}."
    )


def _images(root: Path, sub: str) -> list[str]:
    folder = root / sub
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(POOL):
        image = Image.new("RGB", (48, 48), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
        ImageDraw.Draw(image).ellipse((8, 8, 8 + i % 30, 8 + i % 30), fill=(255, 255, 255))
        name = f"{sub}/{i:06d}.jpg" if sub else f"{i:06d}.jpg"
        image.save(root / name, quality=85)
        names.append(name)
    return names


def make_sources(work: Path, total: int) -> dict[str, tuple[Path, Path, int]]:
    rng = random.Random(0)
    scale = total / sum(PAPER.values())
    quotas = {name: round(q * scale) for name, q in PAPER.items()}
    out = {}
    for name, quota in quotas.items():
        root = work / f"images-{name}"
        sub = "coco/train2017" if name == "sharegptv" else ""
        pool = _images(root, sub)
        records = []
        for i in range(quota):
            if name == "sharegptv":
                conv = [
                    {"from": "human", "value": "<image>\nDescribe the image in detail."},
                    {"from": "gpt", "value": " ".join(_sentence(rng) for _ in range(4))},
                ]
            else:
                turns = 1 if name == "llavar" else 3
                conv = []
                for t in range(turns):
                    question = (
                        "<image>\n" if t == 0 else ""
                    ) + f"What is {rng.choice(WHERE)} the {rng.choice(OBJECTS)}?"
                    conv += [{"from": "human", "value": question}, {"from": "gpt", "value": _sentence(rng)}]
            records.append({"id": f"{name}-{i}", "image": pool[i % POOL], "conversations": conv})
        data = work / (f"{name}.jsonl" if name == "llavar" else f"{name}.json")
        with open(data, "w", encoding="utf-8") as handle:
            if name == "llavar":
                handle.writelines(json.dumps(r) + "\n" for r in records)
            else:
                json.dump(records, handle)
        out[name] = (data, root, quota)
    return out


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / (1024 * 1024)


def bench(size: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    sources = make_sources(work, size)
    recipe = {
        "name": f"bench-{size}",
        "seed": 0,
        "model": "smoke",
        "device": "cpu",
        "sources": [
            {
                "name": n,
                "format": n,
                "data": str(d),
                "image_root": str(r),
                "quota": q,
                "turns": "first" if n == "sharegptv" else "all",
                "style": "description" if n == "sharegptv" else "qa",
                "negatives": {"inject": 1.0},
            }
            for n, (d, r, q) in sources.items()
        ],
        "inject": {"engine": "rules"},
    }
    recipe_path = work / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    exe = [sys.executable, "-m", "bpo_data"]
    gen_s, gen_rss = run_measured(
        [*exe, "generate", "--recipe", str(recipe_path), "--out", str(work / "out"), "--no-progress"]
    )
    exp_s, exp_rss = run_measured(
        [*exe, "export", str(work / "out"), "--to", str(work / "dataset"), "--version", "0.0.1"]
    )
    stats = json.loads((work / "dataset" / "export_stats.json").read_text())
    return {
        "size": size,
        "pairs": stats["pairs"],
        "generate_s": gen_s,
        "generate_rss_gib": gen_rss,
        "export_s": exp_s,
        "export_rss_gib": exp_rss,
        "total_s": gen_s + exp_s,
        "pairs_per_s": stats["pairs"] / (gen_s + exp_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, sum(PAPER.values())])
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temp dir, removed)"
    )
    args = parser.parse_args()
    base = args.work or Path(tempfile.mkdtemp(prefix="bpo-bench-"))
    rows = []
    try:
        for size in args.sizes:
            rows.append(bench(size, base / f"n{size}"))
            r = rows[-1]
            print(
                f"N={r['size']:>7}  pairs={r['pairs']:>7}  generate {r['generate_s']:7.1f} s "
                f"(peak {r['generate_rss_gib']:.2f} GiB)  export {r['export_s']:6.1f} s "
                f"(peak {r['export_rss_gib']:.2f} GiB)  total {r['total_s']:7.1f} s  "
                f"{r['pairs_per_s']:7.1f} pairs/s",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        print(
            f"throughput ratio (largest/smallest): {large['pairs_per_s'] / small['pairs_per_s']:.2f}; "
            f"peak RSS ratio (generate): {large['generate_rss_gib'] / small['generate_rss_gib']:.2f}"
        )


if __name__ == "__main__":
    main()
