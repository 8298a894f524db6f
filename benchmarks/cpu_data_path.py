"""Full-scale CPU data path: synthetic records in the three real formats → rules injector → export.

Prints wall time, pairs/s and peak RSS for each step, size and image size, so "flat as N grows"
and "real-size images cost about what thumbnails do" can be read off side by side. Usage:

    python benchmarks/cpu_data_path.py --sizes 20000 167710 [--image-size 48x48 640x480] [--work DIR]

Each size writes ShareGPT4V (JSON array, sub-folder image paths), LLaVAR (JSONL) and
LLaVA-Instruct (JSON array, multi-turn) records in the paper's proportions, pointing at a pool of
2,000 images per image size (48x48 drawings, or COCO-like 640x480 JPEGs of about 147 KB), then
runs ``bpo-data generate`` (rules injector, inject only: the model-free path) and
``bpo-data export`` as separate processes and reads each one's own peak RSS. Other processes on
the machine change the figures: the load average is printed with them.
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

import numpy as np
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


def _pool(work: Path, size: tuple[int, int]) -> list[Path]:
    """POOL images of one size, made once and shared (hard links) by the three sources."""
    folder = work / f"pool-{size[0]}x{size[1]}"
    if folder.is_dir():
        return sorted(folder.iterdir())
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    for i in range(POOL):
        if size == (48, 48):
            image = Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
            ImageDraw.Draw(image).ellipse((8, 8, 8 + i % 30, 8 + i % 30), fill=(255, 255, 255))
        else:  # a gradient under noise: about 147 KB at 640x480, like a COCO photo
            base = np.stack([(x + i) % width * 255 / width, y * 255 / height, (x + y + i) % 255], -1)
            noisy = base + rng.normal(0, 30, (height, width, 3))
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        image.save(folder / f"{i:06d}.jpg", quality=85)
    return sorted(folder.iterdir())


def _images(root: Path, sub: str, pool: list[Path]) -> list[str]:
    folder = root / sub
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for image in pool:
        name = f"{sub}/{image.name}" if sub else image.name
        os.link(image, root / name)
        names.append(name)
    return names


def make_sources(work: Path, total: int, pool: list[Path]) -> dict[str, tuple[Path, Path, int]]:
    rng = random.Random(0)
    scale = total / sum(PAPER.values())
    quotas = {name: round(q * scale) for name, q in PAPER.items()}
    out = {}
    for name, quota in quotas.items():
        root = work / f"images-{name}"
        sub = "coco/train2017" if name == "sharegptv" else ""
        names = _images(root, sub, pool)
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
            records.append({"id": f"{name}-{i}", "image": names[i % POOL], "conversations": conv})
        data = work / (f"{name}.jsonl" if name == "llavar" else f"{name}.json")
        with open(data, "w", encoding="utf-8") as handle:
            if name == "llavar":
                handle.writelines(json.dumps(r) + "\n" for r in records)
            else:
                json.dump(records, handle)
        out[name] = (data, root, quota)
    return out


def rules_recipe(name: str, sources: dict[str, tuple[Path, Path, int]]) -> dict:
    """The recipe over ``make_sources``' files: every unit injected by the model-free ``rules`` injector."""
    return {
        "name": name,
        "seed": 0,
        "model": "smoke",
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
        "inject": {"injector": "rules"},
        "run": {"device": "cpu"},
    }


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system, all threads) and peak RSS (GiB) of one child process.

    CPU seconds barely move when other jobs share the machine; wall seconds do.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / (1024 * 1024)


def bench(size: int, work: Path, image_size: tuple[int, int]) -> dict:
    run_dir = work / f"n{size}-{image_size[0]}x{image_size[1]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe = rules_recipe(f"bench-{size}", make_sources(run_dir, size, _pool(work, image_size)))
    recipe_path = run_dir / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    exe = [sys.executable, "-m", "bpo_data"]
    load = os.getloadavg()[0]
    gen_s, gen_cpu, gen_rss = run_measured(
        [*exe, "generate", "--recipe", str(recipe_path), "--out", str(run_dir / "out"), "--no-progress"]
    )
    exp_s, exp_cpu, exp_rss = run_measured(
        [*exe, "export", str(run_dir / "out"), "--to", str(run_dir / "dataset"), "--version", "0.0.1"]
    )
    stats = json.loads((run_dir / "dataset" / "export_stats.json").read_text())
    dataset_gb = sum(f.stat().st_size for f in (run_dir / "dataset").rglob("*.parquet")) / 1e9
    shutil.rmtree(run_dir)  # 25 GB at 640x480: one run's files at a time
    return {
        "size": size,
        "image_size": f"{image_size[0]}x{image_size[1]}",
        "pairs": stats["pairs"],
        "generate_s": gen_s,
        "generate_cpu_s": gen_cpu,
        "generate_rss_gib": gen_rss,
        "export_s": exp_s,
        "export_cpu_s": exp_cpu,
        "export_rss_gib": exp_rss,
        "total_s": gen_s + exp_s,
        "total_cpu_s": gen_cpu + exp_cpu,
        "pairs_per_s": stats["pairs"] / (gen_s + exp_s),
        "dataset_gb": dataset_gb,
        "load": (load + os.getloadavg()[0]) / 2,
    }


def _line(r: dict) -> str:
    return (
        f"N={r['size']:>7} {r['image_size']:>8}  pairs={r['pairs']:>7}  "
        f"generate {r['generate_s']:6.1f} s (cpu {r['generate_cpu_s']:6.1f} s, "
        f"peak {r['generate_rss_gib']:.2f} GiB)  "
        f"export {r['export_s']:6.1f} s (cpu {r['export_cpu_s']:6.1f} s, "
        f"peak {r['export_rss_gib']:.2f} GiB)  "
        f"total {r['total_s']:6.1f} s (cpu {r['total_cpu_s']:6.1f} s)  {r['pairs_per_s']:6.1f} pairs/s  "
        f"dataset {r['dataset_gb']:.1f} GB  load {r['load']:.1f}"
    )


def _image_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, sum(PAPER.values())])
    parser.add_argument(
        "--image-size",
        type=_image_size,
        nargs="+",
        default=[(48, 48)],
        help="WxH of the pool's images, e.g. 48x48 640x480 (each is run, side by side)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temp dir, removed)"
    )
    args = parser.parse_args()
    base = args.work or Path(tempfile.mkdtemp(prefix="bpo-bench-"))
    rows = []
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for size in args.sizes:
            for image_size in args.image_size:
                rows.append(bench(size, base, image_size))
                r = rows[-1]
                print(_line(r), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    for size in args.sizes:
        same = [r for r in rows if r["size"] == size]
        for r in same[1:]:
            total, gen, exp, cpu = (
                r[k] / same[0][k] for k in ("total_s", "generate_s", "export_s", "total_cpu_s")
            )
            print(
                f"N={size}: {r['image_size']} / {same[0]['image_size']}: total time {total:.2f}x "
                f"(generate {gen:.2f}x, export {exp:.2f}x), CPU time {cpu:.2f}x"
            )
    first = [r for r in rows if r["image_size"] == rows[0]["image_size"]]
    if len(first) > 1:
        small, large = first[0], first[-1]
        print(
            f"throughput ratio (largest/smallest N): {large['pairs_per_s'] / small['pairs_per_s']:.2f}; "
            f"peak RSS ratio (generate): {large['generate_rss_gib'] / small['generate_rss_gib']:.2f}"
        )


if __name__ == "__main__":
    main()
