"""`eval` checks before it works and fails in one line: device, adapter, benchmark files, model, judge key
and server are checked before any answer is generated, nothing is written into --out before; results name
the base model; a benchmark whose judge replies all failed is flagged, not scored; --limit.

No model is loaded here: answers are stored beforehand (what a rerun finds) and the model is a folder with
only a config.json, which a run that tried to load it would fail on.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys

import pytest
from support.eval_data import LLAVA_QUESTIONS, MMVET_ITEMS, fake_model, store_answers
from support.servers import error, ok, scripted_server
from support.trainer import closed_port_url, recording_server
from typer.testing import CliRunner

from trainer_min.eval.cli import app
from trainer_min.eval.judge import Judge, JudgeRequest
from trainer_min.eval.report import write_report

ONE_ERROR_LINE = re.compile(r"error: [^\n]+\n")


def error_line(output: str) -> str:
    """The one ``error:`` line a failed command ends with (progress and notes may come before it)."""
    lines = output.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], output
    assert "Traceback" not in output
    return lines[-1]


MMVET_ANSWERS = {key: f"answer {key}" for key, *_ in MMVET_ITEMS}
LLAVA_ANSWERS = {str(q): f"model answer {q}" for q, *_ in LLAVA_QUESTIONS}


@pytest.fixture
def model(tmp_path):
    return fake_model(tmp_path / "model")


def eval_argv(data, out, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--out", str(out), "--max-new-tokens", "8", *extra]


def test_failures_before_any_answer_are_one_line_and_write_nothing(
    benchmark_data, model, tmp_path, monkeypatch
):
    import torch

    runner = CliRunner()
    out = tmp_path / "run"
    judge = ["--judge-model", "gpt-4o"]
    no_llava = tmp_path / "partial"
    shutil.copytree(benchmark_data / "mmvet", no_llava / "mmvet")  # MM-Vet is fine; LLaVA-Bench is missing
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cases = [
        (["--bench", "mmvet", "--model", str(model), "--device", "gpu", *judge], "did you mean cuda?"),
        (["--bench", "mmvet", "--adapter", str(tmp_path), *judge], "has no adapter_config.json"),
        (["--bench", "mmvet", "--model", str(tmp_path / "no-model"), *judge], "no such model folder"),
        (["--bench", "mmvet", "--model", str(model)], "give --judge-model"),
        (
            ["--bench", "mmvet", "--model", str(model), *judge],
            "needs an API key: set the environment variable",
        ),
        (["--bench", "mmvet", "--model", str(model), "--limit", "0", *judge], "'--limit'"),
        (
            ["--bench", "mmvet", "--model", str(model), *judge, "--judge-base-url", closed_port_url()],
            "cannot reach the judge at",
        ),
    ]
    if not torch.cuda.is_available():
        cases.append((["--bench", "mmvet", "--model", str(model), "--device", "cuda", *judge], "no CUDA"))
    for extra, named in cases:
        result = runner.invoke(app, eval_argv(benchmark_data, out, *extra))
        assert result.exit_code == 2, (extra, result.output)
        assert ONE_ERROR_LINE.fullmatch(result.output) and named in result.output, result.output
        assert not out.exists(), extra
    result = runner.invoke(app, eval_argv(no_llava, out, "--bench", "all", "--model", str(model), *judge))
    assert result.exit_code == 2 and "llava-bench not found" in result.output and not out.exists()


def test_a_judge_that_refuses_the_key_is_found_out_before_answering(benchmark_data, model, tmp_path):
    def refuse(method: str, path: str):
        return 401, {"Content-Type": "application/json"}, b'{"error": {"message": "Incorrect API key"}}'

    with recording_server(refuse) as server:
        result = CliRunner().invoke(
            app,
            eval_argv(
                benchmark_data,
                tmp_path / "run",
                *("--bench", "mmvet", "--model", str(model), "--judge-model", "m"),
                *("--judge-base-url", server.url, "--judge-api-key-env", "MY_JUDGE_KEY"),
            ),
        )
        calls = list(server.calls)
    assert result.exit_code == 2 and "refused the key in MY_JUDGE_KEY (HTTP 401)" in result.output
    assert [(c.method, c.path) for c in calls] == [("GET", "/v1/models")]  # one cheap request
    assert not (tmp_path / "run").exists()


def test_a_replay_needs_no_judge_server(tmp_path, caplog):
    cache = tmp_path / "judge_cache.jsonl"
    request = JudgeRequest(messages=[{"role": "user", "content": "q"}], temperature=0.0, max_tokens=3)
    with scripted_server(lambda body: ok("0.5")) as server:
        judge = Judge("m", cache, base_url=server.url)
        judge.complete([request])
        judge.close()
    replay = Judge("m", cache, base_url=closed_port_url())
    with caplog.at_level(logging.WARNING):
        replay.check()  # a warning, not an error: the cache may hold every reply needed
    assert "going on with the 1 judge replies cached" in caplog.text
    assert replay.complete([request]) == ["0.5"]


def test_results_name_the_base_model_of_an_adapter_and_honour_limit(benchmark_data, model, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    out = tmp_path / "run"
    store_answers(out, "mmvet", dict(list(MMVET_ANSWERS.items())[:2]), str(model), str(adapter))
    with scripted_server(lambda body: ok("1.0")) as server:
        result = CliRunner().invoke(
            app,
            eval_argv(
                benchmark_data,
                out,
                *("--bench", "mmvet", "--adapter", str(adapter), "--limit", "2"),
                *("--judge-model", "m", "--judge-base-url", server.url),
            ),
        )
        assert len(server.calls) == 2  # the two questions kept by --limit
    assert result.exit_code == 0, result.output
    results = json.loads((out / "mmvet" / "results.json").read_text())
    assert results["model"] == str(model) and results["adapter"] == str(adapter)
    assert results["settings"]["limit"] == 2 and results["metrics"]["items"] == 2
    assert results["metrics"]["total"] == 100.0
    report = write_report([out], tmp_path / "r.md")
    assert f"model {model}, adapter {adapter}" in report and "--limit 2: the first 2 questions only" in report


def test_a_benchmark_whose_judge_replies_all_failed_has_no_score(benchmark_data, model, tmp_path):
    out = tmp_path / "run"
    store_answers(out, "llava-bench", LLAVA_ANSWERS, str(model))
    with scripted_server(lambda body: ok("I liked both answers.")) as server:
        result = CliRunner().invoke(
            app,
            eval_argv(
                benchmark_data,
                out,
                *("--bench", "llava-bench", "--model", str(model)),
                *("--judge-model", "m", "--judge-base-url", server.url),
            ),
        )
    assert result.exit_code == 0, result.output
    assert "llava-bench: no score: all 4 LLaVA-Bench reviews were unparsable" in result.output
    metrics = json.loads((out / "llava-bench" / "results.json").read_text())["metrics"]
    assert metrics["failures"] == 4 and metrics["scores"]["all"]["score"] is None  # not (-1 / -1) = 100.0
    lines = write_report([out], tmp_path / "r.md").splitlines()
    row = next(line for line in lines if line.startswith("| run |"))
    assert row.endswith("| failed |") and "100.0" not in row
    assert any("NO SCORE: all 4 LLaVA-Bench reviews were unparsable" in line for line in lines)


@pytest.mark.slow  # a subprocess, a server or training: seconds
def test_a_failed_extraction_with_the_official_prompt_suggests_the_vision_judge_variant(
    benchmark_data, model, tmp_path
):
    out = tmp_path / "run"
    answers = {str(n): "A man walks his dog along a street lined with parked cars." for n in range(1, 5)}
    store_answers(out, "objhal", answers, str(model))
    with scripted_server(lambda body: error(404, "no such route")) as server:
        result = CliRunner().invoke(
            app,
            eval_argv(
                benchmark_data,
                out,
                *("--bench", "objhal", "--model", str(model)),
                *("--judge-model", "m", "--judge-base-url", server.url),
            ),
        )
    assert result.exit_code == 2 and "add --objhal-prompt no-image-tag" in error_line(result.output)


@pytest.mark.slow  # a fresh process, for the logging and streams a user sees
def test_progress_on_stderr_results_on_stdout_and_no_request_log_lines(benchmark_data, model, tmp_path):
    out = tmp_path / "run"
    store_answers(out, "mmvet", MMVET_ANSWERS, str(model))
    store_answers(out, "llava-bench", LLAVA_ANSWERS, str(model))
    store_answers(out, "objhal", {str(n): "A dog on a couch." for n in range(1, 5)}, str(model))

    def judge(body: dict):
        if body["messages"][0]["role"] == "system":
            return ok("6 8\nfine") if "Q3:" not in body["messages"][1]["content"] else error(400, "too long")
        return ok("0.5")

    command = [sys.executable, "-m", "trainer_min.eval"]
    command += eval_argv(benchmark_data, out, "--bench", "all", "--model", str(model), "--extract", "rules")
    with scripted_server(judge) as server:
        first = subprocess.run(
            [*command, "--judge-model", "m", "--judge-base-url", server.url],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert first.returncode == 2, first.stderr  # one LLaVA-Bench review failed for good
    assert "mmvet: judging" in first.stderr and "5/5 0 cached, 0 failed" in first.stderr
    assert re.search(r"llava-bench: judging .* 4/4 0 cached, 1 failed", first.stderr), first.stderr
    assert "HTTP Request" not in first.stderr and "HTTP/1.1" not in first.stderr
    assert first.stdout == "" and first.stderr.splitlines()[-1].startswith("error: 1 of 4 calls to judge")

    with scripted_server(lambda body: ok("7 7")) as server:
        second = subprocess.run(
            [*command, "--judge-model", "m", "--judge-base-url", server.url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert len(server.calls) == 1  # only the failed call is made again
    assert second.returncode == 0, second.stderr
    assert "5/5 5 cached, 0 failed" in second.stderr and "4/4 3 cached, 0 failed" in second.stderr
    results = [line.split(": ")[0] for line in second.stdout.splitlines()]
    assert results == ["mmvet", "llava-bench", "objhal"], second.stdout  # one line per results file
    assert all(line.endswith("results.json") for line in second.stdout.splitlines())
