"""The cached judge over real HTTP: replays make no call, tags separate deliberate repeats, failures
are reported after the successes are cached, keys stay secret."""

from __future__ import annotations

import json

import pytest
from support.servers import error, ok, scripted_server

from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import Judge, JudgeError, JudgeRequest

CANARY_KEY = "sk-test-CANARY-eval-0123456789"


def ask(text: str, **tag) -> JudgeRequest:
    return JudgeRequest(messages=[{"role": "user", "content": text}], temperature=0.0, max_tokens=4, tag=tag)


def echo(body: dict):
    return ok("echo " + body["messages"][0]["content"])


def test_second_run_answers_from_the_cache_without_any_call(tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    with scripted_server(echo) as server:
        judge = Judge("m", cache, base_url=server.url)
        first = judge.complete([ask("a"), ask("b"), ask("a")])
        judge.close()
        assert len(server.calls) == 2  # the repeated request was answered from the cache in the same batch
    with scripted_server([error(500)]) as down:
        again = Judge("m", cache, base_url=down.url)
        assert again.complete([ask("b"), ask("a")]) == [first[1], first[0]]
        assert down.calls == [] and again.stats.calls == 0 and again.stats.cached == 2
        again.close()
    assert first == ["echo a", "echo b", "echo a"]


def test_key_covers_model_params_and_tag(tmp_path):
    base = ask("q")
    keys = {
        base.key("m"),
        base.key("other-model"),
        JudgeRequest(base.messages, temperature=0.5, max_tokens=4).key("m"),
        JudgeRequest(base.messages, temperature=0.0, max_tokens=5).key("m"),
        ask("q", run=1).key("m"),
    }
    assert len(keys) == 5
    assert ask("q", run=1).key("m") == ask("q", run=1).key("m")


def test_failures_raise_after_caching_the_successes(tmp_path):
    cache = tmp_path / "judge_cache.jsonl"

    def half_broken(body):
        return error(404, "no such model") if "bad" in body["messages"][0]["content"] else ok("fine")

    with scripted_server(half_broken) as server:
        judge = Judge("m", cache, base_url=server.url)
        with pytest.raises(JudgeError, match=r"1 of 2 calls .*rerun the same command"):
            judge.complete([ask("good"), ask("bad")])
        judge.close()
    with scripted_server(echo) as fixed:
        judge = Judge("m", cache, base_url=fixed.url)
        assert judge.complete([ask("good"), ask("bad")]) == ["fine", "echo bad"]
        assert len(fixed.calls) == 1
        judge.close()


def test_judge_errors_name_the_eval_flags_not_the_recipe(tmp_path):
    with scripted_server(lambda body: error(401, "bad key")) as server:
        judge = Judge("m", tmp_path / "c.jsonl", base_url=server.url, api_key_env="JUDGE_KEY")
        with pytest.raises(JudgeError) as raised:
            judge.complete([ask("a")])
        judge.close()
    assert "--judge-api-key-env" in str(raised.value) and "inject." not in str(raised.value)


def test_a_torn_cache_line_is_redone(tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    with scripted_server(echo) as server:
        judge = Judge("m", cache, base_url=server.url)
        judge.complete([ask("a")])
        judge.close()
    with cache.open("a") as sink:
        sink.write('{"key": "abc", "te')
    with scripted_server(echo) as server:
        judge = Judge("m", cache, base_url=server.url)
        assert judge.complete([ask("a"), ask("b")]) == ["echo a", "echo b"]
        assert len(server.calls) == 1
        judge.close()
    # The entry appended after the torn line must start a line of its own: a replay needs no call.
    with scripted_server([error(500)]) as down:
        judge = Judge("m", cache, base_url=down.url)
        assert judge.complete([ask("a"), ask("b")]) == ["echo a", "echo b"]
        assert down.calls == []


def test_the_key_is_sent_but_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", CANARY_KEY)
    cache = tmp_path / "judge_cache.jsonl"
    with scripted_server(echo) as server:
        judge = Judge("m", cache, base_url=server.url, api_key_env="JUDGE_KEY")
        judge.complete([ask("a")])
        judge.close()
    assert server.calls[0].headers["authorization"] == f"Bearer {CANARY_KEY}"
    assert CANARY_KEY not in cache.read_text()
    assert CANARY_KEY not in json.dumps(judge.describe())


def test_openai_without_a_key_says_which_variable_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = Judge("gpt-4o", tmp_path / "c.jsonl")
    with pytest.raises(EvalError, match="OPENAI_API_KEY.*--judge-base-url"):
        judge.complete([ask("a")])
