"""The OpenAI-compatible text engine against a real ``transformers serve`` and a scripted server."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from support.servers import (
    Reply,
    error,
    free_port,
    no_choices,
    not_json,
    null_content,
    ok,
    scripted_server,
    transformers_serve,
)

from bpo_data.engines.base import EngineResult, TextRequest
from bpo_data.engines.openai_compat import OpenAITextEngine
from bpo_data.recipe import SamplingParams

CANARY_KEY = "sk-test-CANARY-0123456789abcdef"


def ask(text: str, seed: int | None = None, **sampling) -> TextRequest:
    return TextRequest(
        messages=[{"role": "user", "content": text}],
        sampling=SamplingParams(**{"max_new_tokens": 8, **sampling}),
        seed=seed,
    )


@pytest.fixture
def make_engine():
    """Engines with test-sized backoff, closed at teardown."""
    engines: list[OpenAITextEngine] = []

    def make(base_url: str | None, **kwargs) -> OpenAITextEngine:
        options = {
            "model": "scripted",
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
            "timeout_s": 5.0,
            **kwargs,
        }
        engine = OpenAITextEngine(base_url=base_url, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.mark.slow
def test_transformers_serve_answers_a_batch_in_order(smoke_model_dir, make_engine):
    # Prompts of strictly growing length: the prompt token counts the server reports show which
    # prompt each result answers, so they also prove the order is preserved.
    prompts = [
        "dog",
        "a red circle",
        "two green triangles above a yellow car",
        "how many dogs are there " * 3,
    ]
    with transformers_serve(smoke_model_dir) as url:
        engine = make_engine(url, model=str(smoke_model_dir), concurrency=2, timeout_s=60.0)
        results = engine.generate([ask(p, seed=i, max_new_tokens=6) for i, p in enumerate(prompts)])
    assert [r.error for r in results] == [None] * len(prompts)
    assert all(isinstance(r.text, str) for r in results)
    assert all(0 < r.completion_tokens <= 6 for r in results)
    prompt_tokens = [r.prompt_tokens for r in results]
    assert prompt_tokens == sorted(set(prompt_tokens)) and prompt_tokens[0] > 0


@pytest.mark.parametrize("header, value", [("Retry-After", "0.3"), ("retry-after-ms", "300")])
def test_honours_retry_after_then_succeeds(make_engine, header, value):
    rate_limited = error(429)
    rate_limited.headers[header] = value
    with scripted_server([rate_limited, ok("fine")]) as server:
        engine = make_engine(server.url, backoff_max_s=1.0)
        start = time.monotonic()
        [result] = engine.generate([ask("q")])
        elapsed = time.monotonic() - start
    assert result == EngineResult(text="fine", prompt_tokens=3, completion_tokens=2)
    assert len(server.calls) == 2
    assert elapsed >= 0.3


def test_retry_after_is_capped_by_backoff_max(make_engine):
    with scripted_server([error(429, retry_after=30), ok("fine")]) as server:
        engine = make_engine(server.url, backoff_max_s=0.1)
        start = time.monotonic()
        [result] = engine.generate([ask("q")])
    assert result.text == "fine"
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_until_max_retries(make_engine, status):
    with scripted_server([error(status)]) as server:
        [result] = make_engine(server.url, max_retries=2).generate([ask("q")])
    assert len(server.calls) == 3
    assert result.text is None
    assert f"HTTP {status}" in result.error and "3 attempts" in result.error


def test_transient_errors_then_recovery(make_engine):
    with scripted_server([error(503), error(500), error(429), ok("recovered")]) as server:
        [result] = make_engine(server.url, max_retries=3).generate([ask("q")])
    assert (result.text, result.error, len(server.calls)) == ("recovered", None, 4)


def test_timeout_is_retried(make_engine):
    with scripted_server([ok("too late", delay_s=3.0), ok("in time")]) as server:
        [result] = make_engine(server.url, timeout_s=0.3).generate([ask("q")])
    assert (result.text, len(server.calls)) == ("in time", 2)


def test_persistent_timeout_fails_that_request_only(make_engine):
    def script(body: dict) -> Reply:
        slow = body["messages"][0]["content"] == "slow"
        return ok("hung", delay_s=3.0) if slow else ok("quick")

    with scripted_server(script) as server:
        slow, quick = make_engine(server.url, timeout_s=0.3, max_retries=1).generate(
            [ask("slow"), ask("fast")]
        )
    assert quick.text == "quick"
    assert slow.text is None and "timed out" in slow.error and "2 attempts" in slow.error


@pytest.mark.parametrize(
    "status, expected",
    [
        (400, "HTTP 400"),
        (401, "authentication failed (HTTP 401)"),
        (403, "permission denied (HTTP 403)"),
        (404, "not found (HTTP 404)"),
        (422, "HTTP 422"),
    ],
)
def test_client_errors_are_not_retried(make_engine, status, expected):
    with scripted_server([error(status, message="the server's own words"), ok("never")]) as server:
        [result] = make_engine(server.url).generate([ask("q")])
    assert len(server.calls) == 1
    assert result.text is None and expected in result.error


def test_401_tells_which_variable_to_set(make_engine, monkeypatch):
    monkeypatch.delenv("MY_PROVIDER_KEY", raising=False)
    with scripted_server([error(401)]) as server:
        [result] = make_engine(server.url, api_key_env="MY_PROVIDER_KEY").generate([ask("q")])
    assert "set MY_PROVIDER_KEY" in result.error and "inject.api_key_env" in result.error


def test_400_passes_on_what_the_server_said(make_engine):
    with scripted_server([error(400, message="max_tokens is too large")]) as server:
        [result] = make_engine(server.url).generate([ask("q")])
    assert "max_tokens is too large" in result.error


MALFORMED = {
    "json content type, html body": not_json(),
    "html content type and body": Reply(raw=b"<html>bad gateway</html>", content_type="text/html"),
    "no choices": no_choices(),
    "empty choices": Reply(body={**ok("x").body, "choices": []}),
    "null content": null_content(),
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_reply_is_retried(make_engine, bad):
    with scripted_server([bad, ok("good")]) as server:
        [result] = make_engine(server.url).generate([ask("q")])
    assert (result.text, len(server.calls)) == ("good", 2)


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_persistently_malformed_reply_becomes_an_error(make_engine, bad):
    with scripted_server([bad]) as server:
        [result] = make_engine(server.url, max_retries=1).generate([ask("q")])
    assert len(server.calls) == 2
    assert result.text is None and "malformed reply" in result.error


def test_concurrency_is_bounded(make_engine):
    with scripted_server(lambda body: ok("x", delay_s=0.15)) as server:
        results = make_engine(server.url, concurrency=3).generate([ask(f"q{i}") for i in range(12)])
    assert [r.text for r in results] == ["x"] * 12
    assert 1 < server.max_in_flight <= 3


def test_order_is_preserved_with_mixed_latencies(make_engine):
    n = 8

    def echo_late_first(body: dict) -> Reply:
        content = body["messages"][0]["content"]
        index = int(content[1:])
        return ok(f"answer to {content}", delay_s=0.04 * (n - index))

    with scripted_server(echo_late_first) as server:
        results = make_engine(server.url, concurrency=n).generate([ask(f"q{i}") for i in range(n)])
    assert [r.text for r in results] == [f"answer to q{i}" for i in range(n)]


def test_one_failure_does_not_fail_the_batch(make_engine):
    def script(body: dict) -> Reply:
        return error(400) if body["messages"][0]["content"] == "bad" else ok("good")

    with scripted_server(script) as server:
        results = make_engine(server.url).generate([ask("a"), ask("bad"), ask("b")])
    assert [r.text for r in results] == ["good", None, "good"]
    assert results[1].error is not None


def test_sampling_params_reach_the_server(make_engine):
    with scripted_server([ok("x")]) as server:
        make_engine(server.url, model="my-model").generate(
            [ask("hello", seed=7, temperature=0.7, top_p=0.9, max_new_tokens=33), ask("unseeded")]
        )
    bodies = sorted((call.body for call in server.calls), key=lambda body: body["messages"][0]["content"])
    seeded, unseeded = bodies
    assert seeded["model"] == "my-model"
    assert seeded["messages"] == [{"role": "user", "content": "hello"}]
    assert (seeded["temperature"], seeded["top_p"], seeded["max_tokens"], seeded["seed"]) == (0.7, 0.9, 33, 7)
    assert "seed" not in unseeded


def test_authorization_carries_the_key_from_the_named_variable(make_engine, monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_KEY", CANARY_KEY)
    with scripted_server([ok("x")]) as server:
        make_engine(server.url, api_key_env="MY_PROVIDER_KEY").generate([ask("q")])
    assert server.calls[0].headers["authorization"] == f"Bearer {CANARY_KEY}"


def test_local_server_without_key_gets_placeholder(make_engine, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with scripted_server([ok("x")]) as server:
        [result] = make_engine(server.url).generate([ask("q")])
    assert result.text == "x"
    assert server.calls[0].headers["authorization"] == "Bearer EMPTY"


def test_openai_without_key_fails_at_construction(monkeypatch):
    monkeypatch.delenv("MY_PROVIDER_KEY", raising=False)
    with pytest.raises(ValueError, match="set the environment variable MY_PROVIDER_KEY"):
        OpenAITextEngine(model="gpt-4o-mini", api_key_env="MY_PROVIDER_KEY")


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_with_or_without_v1(make_engine, suffix):
    with scripted_server([ok("x")]) as server:
        [result] = make_engine(server.url + suffix).generate([ask("q")])
    assert result.text == "x"
    assert len(server.calls) == 1


def test_key_never_leaks(make_engine, monkeypatch, caplog, capsys):
    """A hostile server echoes the Authorization header into every failure it produces."""
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    caplog.set_level(logging.DEBUG, logger="bpo_data.engines.openai_compat")  # whatever an earlier CLI set

    def echo_key(body: dict) -> Reply:
        kind = body["messages"][0]["content"]
        seen = f"you sent {server.calls[-1].headers.get('authorization')}"
        if kind.isdigit():
            reply = error(int(kind), message=seen)
            reply.headers["Retry-After"] = "0"
            return reply
        if kind == "not-json":
            return Reply(raw=seen.encode())
        if kind == "text-body":
            return Reply(raw=seen.encode(), content_type="text/plain")
        if kind == "no-choices":
            return Reply(body={"error": seen})
        return ok("hung", delay_s=3.0)  # longer than the client timeout

    kinds = [
        "400",
        "401",
        "403",
        "404",
        "422",
        "429",
        "500",
        "503",
        "not-json",
        "text-body",
        "no-choices",
        "hang",
    ]
    with scripted_server(echo_key) as server:
        engine = make_engine(server.url, max_retries=1, timeout_s=0.3)
        results = engine.generate([ask(kind) for kind in kinds])
    refused = make_engine(f"http://127.0.0.1:{free_port()}", max_retries=1)
    results += refused.generate([ask("nobody listens")])

    assert all(call.headers["authorization"] == f"Bearer {CANARY_KEY}" for call in server.calls)
    assert all(r.error and r.text is None for r in results), results
    assert "cannot connect" in results[-1].error
    captured = capsys.readouterr()
    surfaces = [r.error for r in results] + [repr(engine), caplog.text, captured.out, captured.err]
    assert not [s for s in surfaces if CANARY_KEY in s]


def test_async_and_sync_callers_share_one_engine(make_engine):
    with scripted_server(lambda body: ok(body["messages"][0]["content"].upper())) as server:
        engine = make_engine(server.url)

        async def from_a_running_loop() -> list[EngineResult]:
            inside = await engine.agenerate([ask("a"), ask("b")])
            # A sync call from inside a running loop (as in a notebook) must not deadlock or raise.
            return inside + engine.generate([ask("c")])

        results = asyncio.run(from_a_running_loop()) + engine.generate([ask("d")])
        engine.close()
        engine.close()
    assert [r.text for r in results] == ["A", "B", "C", "D"]
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate([ask("e")])


# --- key redaction: every string that leaves the engine -------------------------------------


def _key_fragments(key: str, size: int = 8) -> set[str]:
    """Every run of ``size`` characters of the key: finding any of them means a part of it leaked."""
    return {key[i : i + size] for i in range(len(key) - size + 1)}


def _leaks(surfaces: list[str], key: str = CANARY_KEY) -> list[str]:
    fragments = _key_fragments(key)
    return [s for s in surfaces if any(f in s for f in fragments)]


# Where a hostile server puts the key in its words: first, in the middle, straddling the 300-character
# cut at every offset (the cut used to come before redaction and kept a prefix of the key), at the end
# of a long text.
POSITIONS = {
    "start": lambda: CANARY_KEY + " is not a valid key",
    "middle": lambda: "x" * 100 + CANARY_KEY + "y" * 100,
    **{f"pad {pad}": (lambda pad=pad: "x" * pad + CANARY_KEY + " tail") for pad in range(200, 310, 4)},
    "end of 5000": lambda: "z" * 5000 + CANARY_KEY,
}


def test_a_key_echoed_anywhere_in_an_error_never_leaves_the_engine(make_engine, monkeypatch, caplog, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    caplog.set_level(logging.DEBUG, logger="bpo_data.engines.openai_compat")  # whatever an earlier CLI set
    texts = {name: build() for name, build in POSITIONS.items()}

    def echo(body: dict) -> Reply:
        kind, _, name = body["messages"][0]["content"].partition(":")
        said = texts[name]
        if kind == "not-json":
            return Reply(raw=said.encode())
        if kind == "text-body":
            return Reply(raw=said.encode(), content_type="text/plain")
        return error(int(kind), message=said)

    kinds = ["400", "422", "500", "not-json", "text-body"]
    with scripted_server(echo) as server:
        engine = make_engine(server.url, max_retries=0, concurrency=16)
        results = engine.generate([ask(f"{kind}:{name}") for kind in kinds for name in texts])
    assert all(r.error and r.text is None for r in results)
    assert any("[redacted]" in r.error for r in results), "the server's words are kept, the key replaced"
    captured = capsys.readouterr()
    assert not _leaks([r.error for r in results] + [caplog.text, captured.out, captured.err, repr(engine)])


def test_a_key_echoed_in_a_reply_is_redacted_from_the_answer(make_engine, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    texts = [build() for build in POSITIONS.values()]
    with scripted_server(lambda body: ok(texts[int(body["messages"][0]["content"])])) as server:
        results = make_engine(server.url).generate([ask(str(i)) for i in range(len(texts))])
    assert all(r.error is None and "[redacted]" in r.text for r in results)
    assert not _leaks([r.text for r in results])
    assert results[1].text == "x" * 100 + "[redacted]" + "y" * 100


def test_a_retry_after_storm_logs_each_retry_without_the_key(make_engine, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    caplog.set_level(logging.DEBUG, logger="bpo_data.engines.openai_compat")  # whatever an earlier CLI set
    said = "x" * 270 + CANARY_KEY  # straddles the old 300-character cut after "Error code: 429 - "

    def storm(body: dict) -> Reply:
        reply = error(429, message=said)
        reply.headers["Retry-After"] = "0"
        return reply

    with scripted_server(storm) as server:
        results = make_engine(server.url, max_retries=3).generate([ask(f"q{i}") for i in range(8)])
    retries = [r for r in caplog.records if r.getMessage().startswith("retry ")]
    assert len(retries) == 8 * 3, "every retry is logged"
    assert all("HTTP 429" in r.getMessage() and "[redacted]" in r.getMessage() for r in retries)
    assert all("gave up after 4 attempts" in r.error for r in results)
    assert not _leaks([r.error for r in results] + [caplog.text])


def test_submit_streams_one_request_at_a_time_within_the_concurrency(make_engine):
    with scripted_server(lambda body: ok(body["messages"][0]["content"].upper(), delay_s=0.05)) as server:
        engine = make_engine(server.url, concurrency=4)
        assert engine.in_flight == 8
        futures = [engine.submit(ask(f"q{i}")) for i in range(engine.in_flight)]
        results = [f.result(timeout=10) for f in futures]
    assert [r.text for r in results] == [f"Q{i}" for i in range(8)]
    assert server.max_in_flight == 4, "the server sees exactly concurrency requests, never more"
