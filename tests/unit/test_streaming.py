"""Streamed negatives through the shard pipeline: the real OpenAI engine against a scripted loopback server.

The pipeline keeps ``concurrency`` requests at the server whatever the write batch, hands each
answer to the writer as it arrives, turns a failed request into a reject of that unit alone, and an
interruption loses no answer that had come back; a rerun finishes exactly the rest.
"""

from __future__ import annotations

import _thread
import re
import threading
import time
from pathlib import Path

import pytest
from support.llava_source import write_llava_source, write_recipe
from support.servers import Reply, error, ok, scripted_server

from bpo_data.engines.openai_compat import OpenAITextEngine
from bpo_data.generate import generate
from bpo_data.inject.llm import LLMRewriter
from bpo_data.inject.negatives import InjectedNegatives
from bpo_data.jsonl import iter_jsonl
from bpo_data.pipeline.make import MakeNegatives
from bpo_data.pipeline.steps import Work
from bpo_data.recipe import Recipe, load_recipe, with_settings
from bpo_data.schema import Unit
from bpo_data.sources import read_units

KEY = "sk-stream-CANARY-9f8e7d6c5b4a3210"
COLOURS = ["green", "white", "black", "yellow", "purple"]


def answer_of(body: dict) -> str:
    """The ground truth a prompt file put in the last message (``Correct answer: …``)."""
    return re.search(r"Correct answer: (.*)", body["messages"][-1]["content"]).group(1).strip()


def rewrite(body: dict) -> str:
    """A valid wrong answer that depends on the request's seed alone (as a seeded sampler's would)."""
    answer = answer_of(body)
    colour = "red" if "red" in answer else "blue"
    return answer.replace(colour, COLOURS[body.get("seed", 0) % len(COLOURS)], 1)


def rewriting(delay_s: float = 0.0, fail: str | None = None):
    def script(body: dict) -> Reply:
        if fail is not None and fail in answer_of(body):
            return error(400, message="this one is refused")
        return ok(rewrite(body), delay_s=delay_s)

    return script


def openai_recipe(path: Path, url: str, **settings) -> Recipe:
    base = load_recipe(str(path))
    options = {"concurrency": 4, "inject_batch_size": 2, **settings}
    return with_settings(
        base, injector="llm", inject_model="scripted", inject_engine="openai", base_url=url, **options
    )


@pytest.fixture
def source(tmp_path) -> Path:
    data, images = write_llava_source(tmp_path / "src", 20)  # 40 units: two turns each
    return write_recipe(tmp_path / "r.yaml", data, images, negatives={"inject": 1.0})


def records(out: Path, kind: str) -> dict[str, dict]:
    return {r["key"]: r for p in sorted(out.glob(f"{kind}-*.jsonl")) for r in iter_jsonl(p)}


def test_the_server_always_has_concurrency_requests_whatever_the_write_batch(tmp_path, source):
    with scripted_server(rewriting(delay_s=0.05)) as server:
        summary = generate(
            openai_recipe(source, server.url, concurrency=6, inject_batch_size=2), tmp_path / "o"
        )
    assert server.max_in_flight == 6, "batches of 2 would never put more than 2 at the server"
    assert summary.pairs_written == summary.pairs_planned == 40 == len(server.calls)
    assert (
        summary.steps["make negatives"]["inject generated tokens"] == 40 * 2
    )  # the usage each reply reports
    pairs = records(tmp_path / "o", "pairs")
    assert all(p["generator"] == "openai:scripted" and p["rejected"] != p["chosen"] for p in pairs.values())


@pytest.mark.slow  # a subprocess, a server or training: seconds
def test_answers_do_not_depend_on_concurrency_or_batch(tmp_path, source):
    with scripted_server(rewriting()) as server:
        generate(openai_recipe(source, server.url, concurrency=1, inject_batch_size=1), tmp_path / "one")
        generate(openai_recipe(source, server.url, concurrency=8, inject_batch_size=16), tmp_path / "eight")
    one, eight = records(tmp_path / "one", "pairs"), records(tmp_path / "eight", "pairs")
    assert len(one) == 40 and one == eight
    assert len({p["rejected"] for p in one.values()}) > 10, "each unit's own seed picks its answer"


def test_a_failed_request_is_a_reject_of_its_unit_alone_and_a_rerun_retries_it(tmp_path, source):
    out = tmp_path / "o"
    with scripted_server(rewriting(fail="3 red cars")) as server:
        summary = generate(openai_recipe(source, server.url), out)
    rejects = records(out, "rejects")
    failed = {key for key, r in rejects.items() if r["reason"] == "engine_error"}
    assert failed and all("HTTP 400" in rejects[key]["detail"] for key in failed)
    assert summary.pairs_written == 40 - len(failed)
    with scripted_server(rewriting()) as server:
        rerun = generate(openai_recipe(source, server.url), out)
    assert rerun.pairs_written == len(failed) == len(server.calls)
    assert len(records(out, "pairs")) == 40


def test_ctrl_c_keeps_what_was_written_and_a_rerun_makes_exactly_the_rest(tmp_path, source):
    clean = tmp_path / "clean"
    with scripted_server(rewriting()) as server:
        generate(openai_recipe(source, server.url), clean)
    out = tmp_path / "o"
    with scripted_server(rewriting(delay_s=0.05)) as server:

        def interrupt_after_some() -> None:
            while len(server.calls) < 15:
                time.sleep(0.005)
            _thread.interrupt_main()

        threading.Thread(target=interrupt_after_some, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            generate(openai_recipe(source, server.url), out)
    partial = records(out, "pairs")
    assert 0 < len(partial) < 40
    with scripted_server(rewriting()) as server:
        rerun = generate(openai_recipe(source, server.url), out)
    assert rerun.already_done == len(partial) and rerun.pairs_written == 40 - len(partial)
    lines = [r["key"] for p in out.glob("pairs-*.jsonl") for r in iter_jsonl(p)]
    assert len(lines) == len(set(lines)) == 40, "no pair twice, none missing"
    assert records(out, "pairs") == records(clean, "pairs")


def test_an_interruption_upstream_hands_on_every_answer_already_back(tmp_path, source):
    """Ctrl-C while the reader is busy: the answers that came back meanwhile still reach the writer."""
    recipe = openai_recipe(source, "http://unused")
    units = [u for u in read_units(recipe.sources[0], seed=recipe.seed) if isinstance(u, Unit)][:6]
    with scripted_server(rewriting()) as server:
        engine = OpenAITextEngine("scripted", base_url=server.url, concurrency=4)
        maker = InjectedNegatives(LLMRewriter(engine, recipe.inject, recipe.seed), "openai:scripted", 2)
        step = MakeNegatives(lambda: {"inject": maker})

        def reader():
            yield from (Work(unit=unit, kind="inject") for unit in units)
            while len(server.calls) < len(units) or server.in_flight:
                time.sleep(0.01)  # still reading when Ctrl-C comes; every answer is back by now
            time.sleep(0.1)
            raise KeyboardInterrupt

        handed_on = []
        with pytest.raises(KeyboardInterrupt):
            for work in step.run(reader()):
                handed_on.append(work)
        engine.close()
    assert sorted(w.key for w in handed_on) == sorted(f"{u.key}#inject" for u in units)
    assert all(w.pair is not None for w in handed_on)


def test_a_key_echoed_by_the_server_reaches_no_shard_file(tmp_path, source, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def echo(body: dict) -> Reply:
        said = (
            "x" * 270 + body.get("seed", 0) % 7 * "y" + KEY
        )  # around the old 300-character cut (422: final)
        if body.get("seed", 0) % 3 == 0:
            return error(422, message=said)
        return ok(rewrite(body) + " " + KEY)

    out = tmp_path / "o"
    with scripted_server(echo) as server:
        summary = generate(openai_recipe(source, server.url), out)
    assert all(call.headers["authorization"] == f"Bearer {KEY}" for call in server.calls)
    assert summary.pairs_written and summary.rejects
    fragments = {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    for path in out.iterdir():
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not [f for f in fragments if f in text], path.name
