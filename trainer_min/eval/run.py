"""One evaluation run: answer each benchmark's questions, score them, write ``OUT/<bench>/results.json``.

``OUT`` holds one folder per benchmark (the answers with their generation settings, the official
answer/review/grade files, the results) and ``judge_cache.jsonl``, shared by all benchmarks: run
the same command again and nothing is regenerated or re-judged.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trainer_min.eval.llava_bench as llava_bench
import trainer_min.eval.mmvet as mmvet
import trainer_min.eval.objhal as objhal
from trainer_min.eval.answer import AnswerSource, GenerationSettings
from trainer_min.eval.common import write_json
from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import CACHE_FILE, Judge, JudgeStats

log = logging.getLogger(__name__)

BENCHMARKS = ("mmvet", "llava-bench", "objhal")
RESULTS_FILE = "results.json"


@dataclass
class EvalOptions:
    """Everything ``bpo-train eval`` takes; the CLI builds one of these and calls :func:`run_eval`."""

    benchmarks: list[str]
    data: Path
    out: Path
    model: str | None = None
    adapter: str | None = None
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_concurrency: int = 8
    runs: int = 1
    prompt_file: Path | None = None
    objhal_prompt_file: Path | None = None
    objhal_prompt: str = "official"
    drop_failed: bool = False
    extract: str = "judge"
    generation: GenerationSettings = field(default_factory=GenerationSettings)


def benchmark_dir(data: Path, benchmark: str, several: bool) -> Path:
    """``DATA/<benchmark>`` when it exists (the layout for several benchmarks), else ``DATA`` itself."""
    nested = data / benchmark
    if nested.is_dir():
        return nested
    if several:
        raise EvalError(
            f"{nested} not found: to run several benchmarks, --data must hold one folder per benchmark "
            f"({', '.join(BENCHMARKS)})"
        )
    return data


def _needs_judge(options: EvalOptions) -> bool:
    return any(b != "objhal" or options.extract == "judge" for b in options.benchmarks)


def run_eval(options: EvalOptions) -> dict[str, dict[str, Any]]:
    """Run every benchmark asked for; return their results by benchmark name."""
    unknown = [b for b in options.benchmarks if b not in BENCHMARKS]
    if unknown:
        raise EvalError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)} or all")
    if options.model is None and options.adapter is None:
        raise EvalError("give --model (and --adapter for a trained LoRA adapter)")
    if _needs_judge(options) and not options.judge_model:
        raise EvalError(
            "give --judge-model (any OpenAI-compatible chat model; --judge-base-url for your own server)"
        )
    judge = None
    if options.judge_model:
        judge = Judge(
            options.judge_model,
            options.out / CACHE_FILE,
            base_url=options.judge_base_url,
            api_key_env=options.judge_api_key_env,
            concurrency=options.judge_concurrency,
        )
    source = AnswerSource(options.model, options.adapter, options.generation)
    results = {}
    try:
        for benchmark in options.benchmarks:
            if judge is not None:
                judge.stats = JudgeStats()
            results[benchmark] = _run_one(benchmark, options, source, judge)
    finally:
        if judge is not None:
            judge.close()
    return results


def _run_one(
    benchmark: str, options: EvalOptions, source: AnswerSource, judge: Judge | None
) -> dict[str, Any]:
    data = benchmark_dir(options.data, benchmark, several=len(options.benchmarks) > 1)
    out = options.out / benchmark
    store = out / "model_answers.json"
    settings: dict[str, Any] = {}
    if benchmark == "mmvet":
        items = mmvet.load_items(data)
        answers, generation = source.answers(mmvet.questions(items, data), store)
        prompt = mmvet.load_prompt(options.prompt_file)
        settings = {"runs": options.runs, **_prompt_record(options.prompt_file, "official", prompt)}
        metrics = mmvet.score(items, answers, judge, prompt, options.runs, out)
    elif benchmark == "llava-bench":
        items = llava_bench.load_items(data)
        answers, generation = source.answers(llava_bench.questions(items, data), store)
        settings = {"drop_failed": options.drop_failed}
        name = options.model or str(options.adapter)
        metrics = llava_bench.score(items, answers, judge, options.drop_failed, out, name)
    else:
        items = objhal.load_items(data)
        answers, generation = source.answers(objhal.questions(items, data), store)
        prompt = objhal.load_prompt(options.objhal_prompt_file, options.objhal_prompt)
        settings = {"extract": options.extract}
        if options.extract == "judge":
            settings.update(_prompt_record(options.objhal_prompt_file, options.objhal_prompt, prompt))
        metrics = objhal.score(items, answers, data, out, options.extract, judge, prompt)
        settings.update(reader=metrics["reader"], truth_reader=metrics["truth_reader"])
    uses_judge = benchmark != "objhal" or options.extract == "judge"
    results = {
        "benchmark": benchmark,
        "model": options.model,
        "adapter": options.adapter,
        "data": str(data),
        "generation": generation,
        "judge": judge.describe() if judge is not None and uses_judge else None,
        "settings": settings,
        "metrics": metrics,
    }
    write_json(out / RESULTS_FILE, results)
    if judge is not None and uses_judge:
        log.info(
            "%s: %d judge calls made, %d answered from the cache",
            benchmark,
            judge.stats.calls,
            judge.stats.cached,
        )
    return results


def _prompt_record(path: Path | None, builtin: str, prompt: str) -> dict[str, str]:
    """Which prompt the judge got: a file's path, or the name of the bundled text; and its digest."""
    return {
        "prompt": str(path) if path is not None else builtin,
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
    }
