"""What one redraw of `bpo-data launch`'s live view costs on a full-size folder, fresh vs incremental.

    python benchmarks/status_refresh.py [--pairs 167710] [--shards 8]

Writes a folder of ``--shards`` shard files holding ``--pairs`` pair lines (each shard's plan lists
its keys, as a run writes it), then times ``folder_status`` read from scratch (every line and plan
parsed) against a refresh through one ``StatusReader`` after 100 more lines per shard were written.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bpo_data.status import StatusReader, folder_status
from bpo_data.store import ShardFiles


def _line(key: str) -> str:
    record = {"key": key, "chosen": "A dog sits on the grass. " * 4, "rejected": "A cat sits on a bed. " * 4}
    return json.dumps(record) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=167_710)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        keys = [[f"src/{i}/0#weaken" for i in range(s, args.pairs, args.shards)] for s in range(args.shards)]
        for shard, shard_keys in enumerate(keys):
            files = ShardFiles(out, shard, args.shards)
            plan = {
                "pairs_planned": len(shard_keys),
                "pair_keys": shard_keys,
                "started_at": time.time(),
                "pair_lines_at_start": 0,
            }
            files.plan.write_text(json.dumps(plan))
            files.pairs.write_text("".join(_line(k) for k in shard_keys[:-100]))
        started = time.perf_counter()
        folder_status(out)
        fresh = time.perf_counter() - started
        reader = StatusReader(out)
        folder_status(out, reader)
        for shard, shard_keys in enumerate(keys):
            with ShardFiles(out, shard, args.shards).pairs.open("a") as handle:
                handle.write("".join(_line(k) for k in shard_keys[-100:]))
        started = time.perf_counter()
        status = folder_status(out, reader)
        refresh = time.perf_counter() - started
        assert status.done == args.pairs
    print(
        f"{args.pairs} pairs in {args.shards} shards: fresh read {fresh:.2f} s, incremental refresh "
        f"{refresh:.3f} s ({fresh / refresh:.0f}x less)"
    )


if __name__ == "__main__":
    main()
