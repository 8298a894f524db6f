"""End to end: `bpo-data generate --inject-engine openai --concurrency N` against a scripted server.

The flag reaches the engine (the server holds exactly N requests at once, whatever the write batch),
every unit is a pair or a reject, and a key the server echoes back reaches no file of the shard.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from support.llava_source import write_llava_source, write_recipe
from support.servers import Reply, error, ok, scripted_server

from bpo_data.jsonl import iter_jsonl

pytestmark = pytest.mark.slow

KEY = "sk-e2e-CANARY-00112233445566778899"


def rewrite_or_refuse(body: dict) -> Reply:
    answer = re.search(r"Correct answer: (.*)", body["messages"][-1]["content"]).group(1).strip()
    if "3 red cars" in answer:
        return error(422, message="x" * 280 + KEY)  # around the 300-character cut of error details
    colour = "red" if "red" in answer else "blue"
    return ok(answer.replace(colour, "green", 1) + f" ({KEY})", delay_s=0.05)


def test_cli_streams_at_the_given_concurrency_and_writes_no_key(tmp_path):
    data, images = write_llava_source(tmp_path / "src", 30)
    recipe = write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0})
    settings = yaml.safe_load(recipe.read_text())
    settings["run"]["inject"] = {"batch_size": 2}  # the write batch: smaller than the concurrency
    recipe.write_text(yaml.safe_dump(settings))
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    with scripted_server(rewrite_or_refuse) as server:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bpo_data",
                "generate",
                "--recipe",
                str(recipe),
                "--out",
                str(out),
                "--injector",
                "llm",
                "--inject-engine",
                "openai",
                "--inject-model",
                "scripted",
                "--base-url",
                server.url,
                "--concurrency",
                "5",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr
    assert server.max_in_flight == 5
    pairs = [r for p in out.glob("pairs-*.jsonl") for r in iter_jsonl(p)]
    rejects = [r for p in out.glob("rejects-*.jsonl") for r in iter_jsonl(p)]
    assert len(pairs) + len(rejects) == 60 == len(server.calls)
    assert {r["reason"] for r in rejects} == {"engine_error"} and len(rejects) == 3  # records 2, 14, 26
    fragments = {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    written = [p for p in out.rglob("*") if p.is_file()]
    for path in written:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not [f for f in fragments if f in text], path.name
    assert not [f for f in fragments if f in result.stdout + result.stderr]
