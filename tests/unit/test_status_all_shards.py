"""`bpo-data status` and the launch view list every shard of the plan, with an estimate, an ETA and ages."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from datetime import datetime, timedelta, timezone

from rich.console import Console
from typer.testing import CliRunner

from bpo_data import cli
from bpo_data.cli import app
from bpo_data.launch import LaunchJob
from bpo_data.schema import Pair
from bpo_data.status import ShardStatus, _eta, folder_status
from bpo_data.store import ShardStore


def _pair(key: str) -> Pair:
    return Pair(
        key=f"{key}#inject",
        unit_key=key,
        source="src",
        record_id=key.split("/")[1],
        turn=0,
        negative_type="inject",
        image_path="0.jpg",
        image_root="/images",
        prompt=[{"role": "user", "content": "What is it?"}],
        chosen="A dog.",
        rejected="A cat.",
        generator="rules",
    )


def _one_shard_done_of(out, num_shards: int) -> LaunchJob:
    """A launch of ``num_shards`` shards of which only shard 0 has run (3 pairs planned, 3 done)."""
    job = LaunchJob(out_dir=out, num_shards=num_shards, recipe={})
    job.save()
    keys = ["src/a/0", "src/b/0", "src/c/0"]
    with ShardStore(out, 0, num_shards) as store:
        store.write_plan(
            {
                "shard": f"0/{num_shards}",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": time.time() - 30,
                "pairs_planned": 3,
                "already_done": 0,
                "pair_lines_at_start": 0,
                "pair_keys": [f"{k}#inject" for k in keys],
            }
        )
        store.write([_pair(k) for k in keys], [])
    return job


def test_status_lists_every_shard_of_the_launch_and_estimates_the_total(tmp_path):
    out = tmp_path / "out"
    _one_shard_done_of(out, 4)
    status = folder_status(out)
    assert [(s.shard, s.state) for s in status.shards] == [
        ("0/4", "complete"),
        ("1/4", "pending"),
        ("2/4", "pending"),
        ("3/4", "pending"),
    ]
    assert (status.done, status.planned, status.planned_estimate, status.pending) == (3, 3, 12, 3)

    table = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert table.output.count("pending") == 3
    assert "3 / ~12 (estimated: 3 shard(s) not started)" in table.output
    machine = json.loads(CliRunner().invoke(app, ["status", str(out), "--json"]).output)
    assert (machine["pending"], machine["planned_estimate"], len(machine["shards"])) == (3, 12, 4)


def test_a_launch_that_wrote_nothing_yet_is_all_pending(tmp_path):
    out = tmp_path / "out"
    LaunchJob(out_dir=out, num_shards=2, recipe={}).save()
    status = folder_status(out)
    assert [s.state for s in status.shards] == ["pending", "pending"] and status.planned is None


def test_the_eta_is_what_is_left_over_the_rate_of_running_shards():
    def shard(live: bool, rate: float | None) -> ShardStatus:
        return ShardStatus(0, 1, "running" if live else "complete", 0, 10, 0, pairs_per_s=rate, live=live)

    assert _eta([shard(True, 2.0), shard(True, 3.0), shard(False, 50.0)], done=40, total=90) == 10.0
    assert _eta([shard(False, 5.0)], done=40, total=90) is None  # nothing running: no honest ETA
    assert _eta([shard(True, 2.0)], done=90, total=90) is None


def test_ages_and_durations_read_as_a_person_says_them():
    assert cli._duration(42) == "42 s"
    assert cli._duration(824) == "13 min"
    assert cli._duration(3 * 3600 + 5 * 60) == "3 h 05 min"
    assert cli._duration(2 * 86400 + 4 * 3600) == "2 d 4 h"
    three_min_ago = (datetime.now(timezone.utc) - timedelta(minutes=3, seconds=2)).isoformat(
        timespec="seconds"
    )
    assert cli._since(three_min_ago).endswith("(3 min ago)")


def test_the_launch_view_shows_every_shard_live(tmp_path, monkeypatch):
    out = tmp_path / "out"
    job = _one_shard_done_of(out, 3)
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=160))
    with cli._launch_view(job) as report:
        report("shard 0/3 done")
    text = screen.getvalue()
    assert "shard 0/3 done" in text
    assert "1/3" in text and "2/3" in text and text.count("pending") >= 2  # the shards not started yet
    assert f"launch {job.launch_id}" in text


def test_a_live_view_reads_only_what_was_added_and_survives_a_repaired_tail(tmp_path):
    """One StatusReader across refreshes: appended lines count once, a half-written line waits,
    and a file cut back (a torn tail repaired on resume) is read again from its start."""
    import json

    from bpo_data.status import StatusReader, folder_status

    pairs = tmp_path / "pairs-00000-of-00001.jsonl"

    def line(i: int) -> str:
        return json.dumps({"key": f"s/{i}/0#inject"}) + "\n"

    pairs.write_text(line(0) + line(1))
    reader = StatusReader(tmp_path)
    assert folder_status(tmp_path, reader).shards[0].pairs == 2
    with pairs.open("a") as handle:
        handle.write(line(2) + '{"key": "s/3/0#inj')  # the writer is mid-line
    first = folder_status(tmp_path, reader)
    assert first.shards[0].pairs == 3 and first.done == 3
    with pairs.open("a") as handle:
        handle.write('ect"}\n')
    assert folder_status(tmp_path, reader).shards[0].pairs == 4
    pairs.write_text(line(0))  # shorter than what was read: start again
    again = folder_status(tmp_path, reader)
    assert again.shards[0].pairs == 1 and again.done == 1
    assert again.shards[0].pairs == folder_status(tmp_path).shards[0].pairs  # the same as a fresh read
