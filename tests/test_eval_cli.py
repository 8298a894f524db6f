"""``eval`` and ``report`` end to end: the tiny LLaVA answers all three benchmarks (greedy, so
twice the same), a scripted judge scores them, a rerun replays without a call; the report table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.eval_data import build_llava_bench, build_mmvet, build_objhal
from support.servers import ok, scripted_server
from typer.testing import CliRunner

from trainer_min.eval import llava_bench
from trainer_min.eval.answer import AnswerSource, GenerationSettings
from trainer_min.eval.cli import app

RESULTS = ("mmvet", "llava-bench", "objhal")


def judge_reply(body: dict):
    """MM-Vet grades 0.5; LLaVA-Bench reviews give the reference 6 and the model 8."""
    if body["messages"][0]["role"] == "system":
        return ok("6 8\nThe second answer is more detailed.")
    return ok("0.5")


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    build_mmvet(root / "mmvet")
    build_llava_bench(root / "llava-bench")
    build_objhal(root / "objhal")
    return root


def eval_args(data, out, model, url):
    return [
        "eval", "--bench", "all", "--data", str(data), "--out", str(out), "--model", str(model),
        "--judge-model", "scripted", "--judge-base-url", url, "--extract", "rules",
        "--max-new-tokens", "8", "--batch-size", "3",
    ]  # fmt: skip


@pytest.mark.slow
def test_all_benchmarks_end_to_end_then_replay_without_calls(smoke_model_dir, data, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    with scripted_server(judge_reply) as server:
        first = runner.invoke(app, eval_args(data, out, smoke_model_dir, server.url))
        assert first.exit_code == 0, first.output
        calls = len(server.calls)
        results = {b: (out / b / "results.json").read_bytes() for b in RESULTS}
        again = runner.invoke(app, eval_args(data, out, smoke_model_dir, server.url))
        assert again.exit_code == 0, again.output
        assert len(server.calls) == calls  # every judge answer came from the cache
    assert {b: (out / b / "results.json").read_bytes() for b in RESULTS} == results
    assert calls == 5 + 4  # MM-Vet items graded once each, LLaVA-Bench questions; objhal used the rules

    mmvet, llava, objhal = (json.loads(results[b]) for b in RESULTS)
    assert mmvet["metrics"]["total"] == 50.0 and mmvet["metrics"]["capabilities"]["math"] == 50.0
    assert llava["metrics"]["scores"]["all"]["score"] == 133.3 and llava["metrics"]["failures"] == 0
    assert objhal["metrics"]["extract"] == "rules" and objhal["judge"] is None
    assert objhal["metrics"]["responses"] == 4
    for result in (mmvet, llava, objhal):
        generation = result["generation"]
        assert generation["decoding"] == "greedy" and generation["max_new_tokens"] == 8
        assert generation["prompt_layout"].startswith("llava-1.5") and generation["batch_size"] == 3
        assert result["model"] == str(smoke_model_dir)
    assert mmvet["judge"]["model"] == "scripted" and mmvet["judge"]["first_call_at"]
    predictions = json.loads((out / "mmvet" / "predictions.json").read_text())
    assert sorted(predictions) == [f"v1_{i}" for i in range(5)]
    assert all(isinstance(answer, str) for answer in predictions.values())


@pytest.mark.slow
def test_greedy_answers_repeat_and_stored_answers_are_reused(smoke_model_dir, tmp_path):
    root = build_llava_bench(tmp_path / "llava-bench")
    questions = llava_bench.questions(llava_bench.load_items(root), root)
    settings = GenerationSettings(max_new_tokens=12, batch_size=2)
    first, record = AnswerSource(str(smoke_model_dir), None, settings).answers(questions, tmp_path / "a.json")
    second, _ = AnswerSource(str(smoke_model_dir), None, settings).answers(questions, tmp_path / "b.json")
    assert first == second and sorted(first) == ["0", "1", "2", "3"]
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    replay = AnswerSource(str(smoke_model_dir), None, settings)
    assert replay.answers(questions, tmp_path / "a.json")[0] == first
    assert replay._runtime is None  # the model was never loaded
    longer = AnswerSource(str(smoke_model_dir), None, GenerationSettings(max_new_tokens=13, batch_size=2))
    longer.answers(questions, tmp_path / "a.json")
    assert longer._runtime is not None  # other decoding settings: answered again


@pytest.mark.slow
def test_a_lora_adapter_answers_through_its_base(smoke_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    adapter = str(tmp_path / "adapter")

    def save_adapter(seed: int) -> None:
        torch.manual_seed(seed)
        base = LlavaForConditionalGeneration.from_pretrained(smoke_model_dir)
        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(base, lora).save_pretrained(adapter)

    save_adapter(0)
    root = build_llava_bench(tmp_path / "llava-bench")
    questions = llava_bench.questions(llava_bench.load_items(root), root)
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    plain, _ = AnswerSource(str(smoke_model_dir), None, settings).answers(questions, tmp_path / "base.json")
    tuned, _ = AnswerSource(None, adapter, settings).answers(questions, tmp_path / "lora.json")
    assert sorted(tuned) == sorted(plain) and tuned != plain  # the adapter's weights changed the answers
    assert json.loads((tmp_path / "lora.json").read_text())["adapter"] == adapter
    save_adapter(1)
    retrained = AnswerSource(None, adapter, settings)
    again, _ = retrained.answers(questions, tmp_path / "lora.json")
    assert retrained._runtime is not None and again != tuned  # retrained in place: no stale answers


def write_results(run, benchmark, metrics, **extra):
    (run / benchmark).mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": benchmark,
        "model": "llava-hf/llava-1.5-7b-hf",
        "adapter": None,
        "metrics": metrics,
    }
    payload.update(extra)
    (run / benchmark / "results.json").write_text(json.dumps(payload))


def test_report_table_from_run_folders(tmp_path):
    base = tmp_path / "base"
    capabilities = {"rec": 37.3, "ocr": 26.9, "know": 20.0, "gen": 23.7, "spat": 29.6, "math": 9.2}
    mmvet_metrics = {"capabilities": capabilities, "total": 33.3, "std": 0.4, "runs": 3, "items": 218}
    judge = {"model": "gpt-4o", "first_call_at": "2026-01-02T00:00:00+00:00", "last_call_at": None}
    write_results(base, "mmvet", mmvet_metrics, judge=judge, settings={"prompt": "official.txt"})
    llava = {"scores": {"all": {"score": 64.25}}, "items": 60, "failures": 2, "drop_failed": False}
    write_results(base, "llava-bench", llava, judge=judge)
    objhal = {"resp": 52.0, "obj": 25.55, "chair_s": 48.0, "recall": 60.0, "responses": 300, "items": 300}
    write_results(base, "objhal", {**objhal, "extract": "rules", "extraction_failures": 0}, judge=None)
    partial = tmp_path / "bpo"
    write_results(partial, "llava-bench", {**llava, "failures": 0}, judge=judge)
    to = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "trainer_min.eval", "report", str(base), str(partial), "--to", str(to)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    table = to.read_text()
    assert table in done.stdout
    lines = table.splitlines()
    assert lines[0].startswith("| Model | MM-Vet Rec | OCR | Know | Gen | Spat | Math | Total | ObjHal Resp.")
    assert "| base | 37.3 | 26.9 | 20.0 | 23.7 | 29.6 | 9.2 | 33.3 ± 0.4 | 52.0 | 25.6 | 64.2 |" in lines
    assert "| bpo | – | – | – | – | – | – | – | – | – | 64.2 |" in lines
    assert any(line.startswith("| LLaVA-1.5-7B (paper) |") for line in lines)
    assert any("2 unparsable review(s) kept as (-1, -1)" in line for line in lines)
    assert any("rule-based extraction" in line and "grader prompt official.txt" in line for line in lines)


def test_eval_without_a_judge_model_explains(data, tmp_path):
    result = CliRunner().invoke(
        app, ["eval", "--bench", "mmvet", "--data", str(data), "--out", str(tmp_path / "o"), "--model", "m"]
    )
    assert result.exit_code == 2
    assert "--judge-model" in result.output


def test_report_of_a_folder_without_results_explains(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--to", str(tmp_path / "r.md")])
    assert result.exit_code == 2
    assert "--out folder of bpo-train eval" in result.output
