"""Streamed injection with the OpenAI-compatible engine: the whole shard pipeline against a loopback
server that answers each request after a fixed delay, at concurrency 1 and at concurrency C, side by side.

    python benchmarks/openai_streaming.py [--units 3200] [--concurrency 32] [--delay 0.2]
                                          [--sequential-units 160] [--repeats 3]

Each run is ``bpo_data.generate.generate`` on a LLaVA-format source (the real reader, sampler,
header check, prompt files, cleaning, validation, error types and writer), with
``run.inject.engine: openai`` and the shipped ``batch_size: 16``. The server runs in a process of its
own (``--serve``, the scripted server of ``tests/support/servers.py``, with ``TCP_NODELAY`` as
production servers set it) and answers every request with a valid rewrite after ``--delay`` seconds.

A sequential request costs the delay plus the client's own time per unit, so the sequential run is
timed on ``--sequential-units`` units (it would take ``units × delay`` otherwise) and compared per
unit. The ideal speed-up is the sequential time per unit over ``delay / concurrency`` (the server
never holding more than ``concurrency`` requests); the mean number of requests at the server is
``units × delay / wall``. Last, the CPU each request costs: the engine's own call, the client's
typed ``chat.completions.create`` for comparison, and the server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bpo_data.engines.base import TextRequest

REPO = Path(__file__).resolve().parent.parent
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown"]


def rewrite(body: dict) -> str:
    """A valid wrong answer: the first colour of the ground truth swapped for another."""
    answer = re.search(r"Correct answer: (.*)", body["messages"][-1]["content"]).group(1).strip()
    for colour in COLOURS:
        if f" {colour} " in answer:
            other = COLOURS[(COLOURS.index(colour) + 1 + body.get("seed", 0) % 5) % len(COLOURS)]
            return answer.replace(f" {colour} ", f" {other} ", 1)
    return answer + " There is also a small dog."


def serve(delay_s: float) -> None:
    """Server mode: print the URL, answer until stdin closes."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.servers import ok, scripted_server

    with scripted_server(lambda body: ok(rewrite(body), delay_s=delay_s), nodelay=True) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def write_source(work: Path, units: int) -> tuple[Path, Path]:
    from cpu_data_path import _sentence

    images = work / "images"
    images.mkdir(parents=True)
    for i in range(64):
        Image.new("RGB", (48, 48), (i * 4, 120, 200)).save(images / f"{i}.jpg")
    rng = random.Random(0)
    data = work / "data.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for i in range(units):
            conversation = [
                {"from": "human", "value": "<image>\nWhat is in the picture?"},
                {"from": "gpt", "value": _sentence(rng)},
            ]
            handle.write(json.dumps({"id": f"r{i}", "image": f"{i % 64}.jpg", "conversations": conversation}))
            handle.write("\n")
    return data, images


def recipe_for(data: Path, images: Path, url: str, concurrency: int, quota: int):
    from bpo_data.recipe import Recipe

    return Recipe.model_validate(
        {
            "name": "openai-streaming-bench",
            "seed": 0,
            "model": "smoke",
            "sources": [
                {
                    "name": "src",
                    "format": "llava",
                    "data": str(data),
                    "image_root": str(images),
                    "quota": quota,
                    "style": "qa",
                    "negatives": {"inject": 1.0},
                }
            ],
            "inject": {"injector": "llm", "model": "bench"},
            "run": {"inject": {"engine": "openai", "base_url": url, "concurrency": concurrency}},
        }
    )


def timed_run(recipe, out: Path) -> dict:
    from bpo_data.generate import generate

    cpu, wall = time.process_time(), time.perf_counter()
    summary = generate(recipe, out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if summary.pairs_written != summary.pairs_planned:
        raise SystemExit(
            f"expected {summary.pairs_planned} pairs, got {summary.pairs_written}: {summary.rejects}"
        )
    return {"units": summary.pairs_written, "wall": wall, "cpu": cpu}


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a child process has used so far (Linux ``/proc``; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu(url: str, server_pid: int, concurrency: int, requests: int) -> dict[str, float]:
    """CPU per request of the engine's own call and of the client's typed ``chat.completions.create``."""
    import asyncio

    import openai

    from bpo_data.engines.openai_compat import OpenAITextEngine
    from bpo_data.inject.prompt_files import load_prompt_file, render_messages
    from bpo_data.recipe import SamplingParams
    from bpo_data.schema import Unit

    unit = Unit("k", "s", "r", 0, "i.jpg", ".", "What is in the picture?", "There are 3 red dogs near a bus.")
    messages = render_messages(load_prompt_file("qa"), unit)
    sampling = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=256)
    engine = OpenAITextEngine("bench", base_url=url, concurrency=concurrency)
    batch = [TextRequest(messages=messages, sampling=sampling, seed=i) for i in range(requests)]
    engine.generate(batch[:concurrency])  # warm-up: connections, first-call set-up
    out = {}
    cpu, server = time.process_time(), process_cpu_s(server_pid)
    engine.generate(batch)
    out["engine"] = (time.process_time() - cpu) / requests
    if server is not None:
        out["server"] = (process_cpu_s(server_pid) - server) / requests
    engine.close()

    async def typed() -> None:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="EMPTY", max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(seed: int) -> None:
            async with gate:
                await client.chat.completions.create(
                    model="bench", messages=messages, temperature=0.8, top_p=0.95, max_tokens=256, seed=seed
                )

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up
        began = time.process_time()
        await asyncio.gather(*(one(i) for i in range(requests)))
        out["typed create"] = (time.process_time() - began) / requests
        await client.close()

    asyncio.run(typed())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=3200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the server waits before answering")
    parser.add_argument("--sequential-units", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--client-requests", type=int, default=600, help="requests of the CPU-per-request timing"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.delay)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--delay", str(args.delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="bpo-openai-bench-") as tmp:
            work = Path(tmp)
            data, images = write_source(work, args.units)
            # Imports and first-call set-up are paid once, before anything is timed.
            timed_run(recipe_for(data, images, url, 4, 8), work / "out-warm-up")
            cpu = client_cpu(url, server.pid, args.concurrency, args.client_requests)
            runs: dict[str, list[dict]] = {"sequential": [], "streamed": []}
            for repeat in range(args.repeats):
                for name, concurrency, quota in (
                    ("sequential", 1, args.sequential_units),
                    ("streamed", args.concurrency, args.units),
                ):
                    recipe = recipe_for(data, images, url, concurrency, quota)
                    run = timed_run(recipe, work / f"out-{name}-{repeat}")
                    runs[name].append(run)
                    print(
                        f"  {name:10s} repeat {repeat + 1}: {run['units']} units in {run['wall']:.2f} s "
                        f"(client CPU {run['cpu']:.2f} s)",
                        flush=True,
                    )
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    report(runs, args)
    print(
        "CPU per request, same server: "
        + ", ".join(f"{name} {seconds * 1000:.2f} ms" for name, seconds in cpu.items())
        + f" ({args.client_requests} requests; 'engine' is OpenAITextEngine's plain post, "
        "'typed create' the client's chat.completions.create)"
    )


def report(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    seq = [r["wall"] / r["units"] for r in runs["sequential"]]
    streamed = [r["wall"] / r["units"] for r in runs["streamed"]]
    speedups = [s / t for s, t in zip(seq, streamed)]
    ideals = [s / (args.delay / args.concurrency) for s in seq]
    fractions = [sp / ideal for sp, ideal in zip(speedups, ideals)]
    in_flight = [r["units"] * args.delay / r["wall"] for r in runs["streamed"]]
    load = os.getloadavg()

    def mm(values: list[float], fmt: str) -> str:
        return f"{format(min(values), fmt)} / {format(statistics.median(values), fmt)}"

    print(
        f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"min / median of {args.repeats}"
    )
    print(f"sequential (concurrency 1)      : {mm([s * 1000 for s in seq], '.1f')} ms per unit")
    print(
        f"streamed (concurrency {args.concurrency:<3})      : "
        f"{mm([s * 1000 for s in streamed], '.2f')} ms per unit, "
        f"{mm([r['wall'] for r in runs['streamed']], '.2f')} s for {args.units} units"
    )
    print(f"speed-up over sequential        : {mm(speedups, '.1f')}  (ideal {mm(ideals, '.1f')})")
    print(f"fraction of ideal               : {mm(fractions, '.3f')}")
    print(f"mean requests at the server     : {mm(in_flight, '.1f')} of {args.concurrency}")
    print(f"client CPU, streamed run        : {mm([r['cpu'] for r in runs['streamed']], '.1f')} s")


if __name__ == "__main__":
    main()
