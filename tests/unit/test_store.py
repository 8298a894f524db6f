"""The shard store: durable appends, torn-tail repair, done keys across shard counts, the lock."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from bpo_data.jsonl import repair_tail
from bpo_data.schema import Reject
from bpo_data.store import ShardBusy, ShardStore, parse_shard_spec


def _reject(key: str, reason: str = "missing_image") -> Reject:
    return Reject(key=key, source="s", reason=reason, detail="d")


def test_parse_shard_spec():
    assert parse_shard_spec("3/8") == (3, 8)
    for bad in ("8/8", "a/b", "1", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard_spec(bad)


def test_torn_tail_is_cut_and_complete_lines_kept(tmp_path):
    path = tmp_path / "pairs-00000-of-00001.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"key": "b"}\n{"key": "c", "chos')
    assert repair_tail(path) == len(b'{"key": "c", "chos')
    assert path.read_bytes() == b'{"key": "a"}\n{"key": "b"}\n'
    assert repair_tail(path) == 0


def test_done_keys_span_every_shard_file_and_skip_retryable(tmp_path):
    (tmp_path / "pairs-00001-of-00004.jsonl").write_text('{"key": "x#weaken"}\n{"key": "y#inj')
    (tmp_path / "rejects-00000-of-00002.jsonl").write_text(
        json.dumps(_reject("z#inject").to_dict())
        + "\n"
        + json.dumps(_reject("w#inject", "engine_error").to_dict())
        + "\n"
    )
    with ShardStore(tmp_path, 0, 1) as store:
        assert store.done_keys() == {"x#weaken", "z#inject"}


def _hold(path, ready, release):
    with ShardStore(path, 0, 2):
        ready.set()
        release.wait(30)


def test_second_process_is_kept_off_a_live_shard(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(ShardBusy, match=f"pid {holder.pid}"):
            with ShardStore(tmp_path, 0, 2):
                pass
        with ShardStore(tmp_path, 1, 2):  # another shard of the same run is free
            pass
    finally:
        release.set()
        holder.join(30)
    with ShardStore(tmp_path, 0, 2):  # released when the holder ends
        pass


def test_a_second_shard_count_is_refused_while_one_is_live(tmp_path):
    with ShardStore(tmp_path, 1, 4):
        with pytest.raises(ShardBusy, match=r"another count \(1/4\).*--shard i/4"):
            with ShardStore(tmp_path, 0, 3):
                pass
        with ShardStore(tmp_path, 2, 4):  # the same count shares the folder
            pass
    with ShardStore(tmp_path, 0, 3):  # once it has stopped, the count may change
        pass
    assert not list(tmp_path.glob(".pid-*"))


def test_a_pair_that_is_not_utf8_is_refused_alone_and_a_reject_is_always_written(tmp_path):
    from bpo_data.schema import Pair
    from bpo_data.store import UnwritableRecord

    pair = Pair(
        "k#inject", "k", "s", "r", 0, "inject", "a.jpg", "/i", [], "chosen \ud800", "rejected", "rules"
    )
    with ShardStore(tmp_path, 0, 1) as store:
        with pytest.raises(UnwritableRecord, match="k#inject"):
            store.write([pair], [])
        store.write([], [Reject(key="bad \udfff", source="s", reason="non_utf8", detail="d \ud800")])
    assert (tmp_path / "pairs-00000-of-00001.jsonl").read_bytes() == b""
    (line,) = (tmp_path / "rejects-00000-of-00001.jsonl").read_bytes().splitlines()
    assert json.loads(line)["key"] == "bad \udfff"
