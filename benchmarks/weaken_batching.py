"""Image weakening with the hf engine: one batched call vs a batch-1 loop, same model, same token budget.

Greedy decoding makes both paths produce the same tokens (the test suite checks batched == one by
one), so the speed-up compares equal work. Usage:

    python benchmarks/weaken_batching.py [--requests 64] [--batch 16] [--max-new-tokens 32] [--model smoke]
"""

from __future__ import annotations

import argparse
import time

import torch
from gpu_throughput import weakening_requests
from transformers.utils import logging as hf_logging

from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime
from bpo_data.smoke_model import ensure_smoke_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", default="smoke", help="'smoke' (tiny local LLaVA) or an hf id/folder")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    model = str(ensure_smoke_model()) if args.model == "smoke" else args.model
    runtime = LlavaRuntime.load(model, device=args.device)
    engine = HFVisionEngine(runtime)
    requests = weakening_requests(args.requests, args.max_new_tokens)
    engine.generate(requests[:2])  # warm-up

    def timed(batch: int) -> tuple[float, int]:
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(requests), batch):
            tokens += sum(r.completion_tokens for r in engine.generate(requests[i : i + batch]))
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, tokens

    single_s, single_tokens = timed(1)
    batched_s, batched_tokens = timed(args.batch)
    print(
        f"model={args.model} device={runtime.device} requests={args.requests} "
        f"max_new_tokens={args.max_new_tokens} threads={torch.get_num_threads()}"
    )
    print(
        f"batch 1 loop : {single_s:7.2f} s  {single_tokens / single_s:8.1f} tokens/s  "
        f"({single_tokens} tokens)"
    )
    print(
        f"batch {args.batch:<6} : {batched_s:7.2f} s  {batched_tokens / batched_s:8.1f} tokens/s  "
        f"({batched_tokens} tokens)"
    )
    print(f"speed-up: {single_s / batched_s:.1f}x")


if __name__ == "__main__":
    main()
