"""``eval`` end to end: the tiny LLaVA answers all three benchmarks (greedy, so twice the same), a
scripted judge scores them, a rerun replays without a call; stored answers and LoRA adapters; the
judge over a real `transformers serve` for MM-Vet and Object HalBench extraction."""

from __future__ import annotations

import json

import pytest
from support.eval_data import build_llava_bench, build_mmvet, build_objhal
from support.servers import ok, scripted_server, transformers_serve
from typer.testing import CliRunner

from trainer_min.eval import llava_bench, mmvet, objhal
from trainer_min.eval.answer import AnswerSource, GenerationSettings
from trainer_min.eval.cli import app
from trainer_min.eval.judge import Judge

RESULTS = ("mmvet", "llava-bench", "objhal")


def judge_reply(body: dict):
    """MM-Vet grades 0.5; LLaVA-Bench reviews give the reference 6 and the model 8."""
    if body["messages"][0]["role"] == "system":
        return ok("6 8\nThe second answer is more detailed.")
    return ok("0.5")


def eval_args(data, out, model, url):
    return [
        "eval", "--bench", "all", "--data", str(data), "--out", str(out), "--model", str(model),
        "--judge-model", "scripted", "--judge-base-url", url, "--extract", "rules",
        "--max-new-tokens", "8", "--batch-size", "3",
    ]  # fmt: skip


@pytest.mark.slow
def test_all_benchmarks_end_to_end_then_replay_without_calls(smoke_model_dir, benchmark_data, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    with scripted_server(judge_reply) as server:
        first = runner.invoke(app, eval_args(benchmark_data, out, smoke_model_dir, server.url))
        assert first.exit_code == 0, first.output
        calls = len(server.calls)
        results = {b: (out / b / "results.json").read_bytes() for b in RESULTS}
        again = runner.invoke(app, eval_args(benchmark_data, out, smoke_model_dir, server.url))
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


@pytest.mark.slow
def test_mmvet_grading_over_transformers_serve(smoke_model_dir, tmp_path):
    """Wire compatibility only: the smoke model answers noise, so a grade is parsed or 0 after five tries."""
    items = mmvet.load_items(build_mmvet(tmp_path / "mm-vet"))[:1]
    with transformers_serve(smoke_model_dir) as url:
        judge = Judge(str(smoke_model_dir), tmp_path / "cache.jsonl", base_url=url, concurrency=1)
        try:
            metrics = mmvet.score(
                items, {"v1_0": "a cat"}, judge, mmvet.load_prompt(None), 1, tmp_path / "out"
            )
        finally:
            judge.close()
    grade = json.loads((tmp_path / "out" / "grades.json").read_text())["v1_0"]
    [tries], [parsed], [score] = grade["tries"], grade["parsed"], grade["score"]
    assert judge.stats.calls == tries and 1 <= tries <= len(mmvet.TEMPERATURES)
    assert isinstance(grade["content"][0], str)
    if parsed:
        assert score == mmvet.parse_correctness(grade["content"][0])
    else:
        assert tries == len(mmvet.TEMPERATURES) and score == 0.0 and metrics["scored_zero_unparsable"] == 1
    assert metrics["total"] == pytest.approx(score * 100, abs=0.05)


@pytest.mark.slow
def test_objhal_extraction_over_transformers_serve(smoke_model_dir, tmp_path, monkeypatch):
    """A LLaVA judge behind `transformers serve` takes the extraction prompt without its <image>
    marker; the smoke model answers noise, so the response fails extraction or yields some list."""
    monkeypatch.setattr(objhal, "EXTRACT_MAX_TOKENS", 16)  # noise runs to the limit: keep it short on CPU
    monkeypatch.setattr(objhal, "EXTRACT_TRIES", 2)
    data = build_objhal(tmp_path / "objhal")
    items = objhal.load_items(data)[:1]
    answers = {items[0].id: "A man walks his dog in the park near a red car."}
    with transformers_serve(smoke_model_dir) as url:
        judge = Judge(str(smoke_model_dir), tmp_path / "cache.jsonl", base_url=url, concurrency=1)
        try:
            prompt = objhal.load_prompt(None, objhal.NO_IMAGE_TAG)
            metrics = objhal.score(items, answers, data, tmp_path / "out", "judge", judge, prompt)
        finally:
            judge.close()
    assert 1 <= judge.stats.calls <= objhal.EXTRACT_TRIES
    assert metrics["responses"] + metrics["extraction_failures"] == 1
    cache = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert all("<image>" not in entry["request"]["messages"][0]["content"] for entry in cache)


@pytest.mark.slow
def test_an_adapter_alone_is_answered_on_its_recorded_base(smoke_model_dir, benchmark_data, tmp_path):
    """`--adapter` without `--model`: the base comes from the adapter's files and goes into the results;
    `--device cpu` and `--limit 2` are honoured with the real model loaded."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    adapter = tmp_path / "adapter"
    base = LlavaForConditionalGeneration.from_pretrained(smoke_model_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(adapter)
    out = tmp_path / "run"
    argv = [
        "eval", "--bench", "objhal", "--data", str(benchmark_data), "--out", str(out),
        "--adapter", str(adapter), "--extract", "rules", "--limit", "2", "--device", "cpu",
        "--max-new-tokens", "6",
    ]  # fmt: skip
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "objhal" / "results.json").read_text())
    assert results["model"] == str(smoke_model_dir) and results["adapter"] == str(adapter)
    assert results["generation"]["device"] == "cpu" and results["metrics"]["items"] == 2
    assert len(json.loads((out / "objhal" / "model_answers.json").read_text())["answers"]) == 2
    assert "objhal: answering" in result.output and "2/2" in result.output
