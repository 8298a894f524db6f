"""`bpo-data status`: progress by key across shard counts, rates, and which shards a live process holds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from bpo_data.cli import app
from bpo_data.schema import Pair, Reject
from bpo_data.status import folder_status
from bpo_data.store import ShardStore


def _pair(key: str) -> Pair:
    return Pair(
        key=f"{key}#weaken",
        unit_key=key,
        source="src",
        record_id=key.split("/")[1],
        turn=0,
        negative_type="weaken",
        image_path="0.jpg",
        image_root="/images",
        prompt=[{"role": "user", "content": "What is it?"}],
        chosen="A dog.",
        rejected="A cat.",
        generator="hf:smoke",
    )


def _plan(keys: list[str], started_at: float) -> dict:
    return {
        "shard": "?",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": started_at,
        "pairs_planned": len(keys),
        "already_done": 0,
        "pair_lines_at_start": 0,
        "pair_keys": [f"{k}#weaken" for k in keys],
    }


# A shard run in another process: it plans, writes one pair, then waits (holding its lock) until told.
_LIVE_SHARD = """
import json, os, sys, time
from bpo_data.store import ShardStore
from bpo_data.schema import Pair
out, plan, pair = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
with ShardStore(out, 1, 2) as store:
    plan["pid"] = os.getpid()
    store.write_plan(plan)
    store.write([Pair(**pair)], [])
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_status_counts_by_key_across_shard_counts_and_sees_live_and_killed_shards(tmp_path):
    out = tmp_path / "out"
    now = time.time()
    with ShardStore(out, 0, 2) as store:  # a finished run that left one retryable reject
        store.write_plan(_plan(["src/a/0", "src/b/0", "src/c/0", "src/d/0"], now - 10))
        store.write([_pair("src/a/0"), _pair("src/b/0")], [])
        store.write([], [Reject("src/c/0#weaken", "src", "engine_error", "CUDA out of memory")])
        store.write([], [Reject("src/zz/0", "src", "corrupt_json", "line 9 of data.jsonl")])
        store.write_summary({"pairs_planned": 4, "pairs_per_s": 2.5})
    with ShardStore(out, 0, 3) as store:  # another shard count wrote one of shard 0/2's keys
        store.write([_pair("src/d/0")], [])

    live = subprocess.Popen(
        [sys.executable, "-c", _LIVE_SHARD, str(out)]
        + [json.dumps(_plan(["src/e/0", "src/f/0"], now - 5)), json.dumps(_pair("src/e/0").to_dict())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout.readline().strip() == "ready"
        status = folder_status(out)
        shards = {s.shard: s for s in status.shards}
        assert list(shards) == ["0/2", "1/2", "0/3"]

        finished = shards["0/2"]
        assert (finished.done, finished.planned) == (3, 4)  # a, b and d (written by 0/3); c is retryable
        assert finished.state == "incomplete" and not finished.live and finished.pid is None
        assert finished.rejects == {"corrupt_json": 1, "engine_error": 1}
        assert finished.pairs_per_s == 2.5  # the run ended after it planned: its summary's rate

        running = shards["1/2"]
        assert running.live and running.state == "running"
        assert running.pid == live.pid and running.host == socket.gethostname()
        assert (running.done, running.planned, running.pairs) == (1, 2, 1)
        assert 0.1 < running.pairs_per_s <= 0.2  # one pair since it started 5 s ago
        assert running.last_write is not None

        assert shards["0/3"].planned is None and shards["0/3"].done == 1  # it never planned
        assert (status.done, status.planned) == (4, 6)

        result = CliRunner().invoke(app, ["status", str(out), "--json"])
        assert result.exit_code == 0, result.output
        machine = json.loads(result.output)
        assert (machine["done"], machine["planned"]) == (4, 6)
        fields = ("shard", "state", "done", "planned", "rejects", "live", "pid", "host", "last_write")
        assert [{f: s[f] for f in fields} for s in machine["shards"]] == [
            {f: getattr(s, f) for f in fields} for s in status.shards
        ]
        table = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "200"})
        assert f"pid {live.pid}" in table.output and "running" in table.output
    finally:
        os.kill(live.pid, signal.SIGKILL)
        live.wait()

    killed = {s.shard: s for s in folder_status(out).shards}["1/2"]
    assert not killed.live and killed.state == "incomplete"
    assert killed.pid == live.pid  # the pid file a kill -9 leaves behind names the dead process
    table = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "200"})
    assert f"pid {live.pid} was killed" in table.output


def test_status_of_a_folder_without_shards_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["status", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "has `bpo-data generate`" in result.output


def test_completed_shard_is_complete(tmp_path: Path):
    with ShardStore(tmp_path, 0, 1) as store:
        store.write_plan(_plan(["src/a/0"], time.time()))
        store.write([_pair("src/a/0")], [])
    (shard,) = folder_status(tmp_path).shards
    assert shard.state == "complete" and (shard.done, shard.planned) == (1, 1)


def test_status_parses_each_shard_file_once(tmp_path: Path, monkeypatch):
    """A 167k-pair folder is read in one pass per file: keys, pair counts and reject reasons together."""
    import bpo_data.status as status_module
    import bpo_data.store as store_module

    with ShardStore(tmp_path, 0, 2) as store:
        store.write_plan(_plan(["src/a/0", "src/b/0"], time.time()))
        store.write([_pair("src/a/0")], [Reject("src/b/0#weaken", "src", "engine_error", "OOM")])
    with ShardStore(tmp_path, 1, 2) as store:
        store.write([_pair("src/c/0")], [Reject("src/d/0#weaken", "src", "invalid_rewrite", "same text")])
    opened: list[str] = []
    real_lines, real_records = status_module._new_lines, store_module.iter_jsonl

    def counting_lines(path, offset):
        opened.append(Path(path).name)
        return real_lines(path, offset)

    def counting_records(path):
        opened.append(Path(path).name)
        return real_records(path)

    monkeypatch.setattr(status_module, "_new_lines", counting_lines)
    monkeypatch.setattr(store_module, "iter_jsonl", counting_records)
    status = folder_status(tmp_path)
    assert sorted(opened) == sorted(p.name for p in tmp_path.glob("*.jsonl")) and len(opened) == 4
    assert (status.done, status.planned) == (1, 2)  # b's reject is retryable
    assert [(s.done, s.pairs, s.rejects) for s in status.shards] == [
        (1, 1, {"engine_error": 1}),
        (2, 1, {"invalid_rewrite": 1}),
    ]
