"""One evaluation run: answer each benchmark's questions, score them, write ``OUT/<bench>/results.json``.

``OUT`` holds one folder per benchmark (the answers with their generation settings, the official
answer/review/grade files, the results) and ``judge_cache.jsonl``, shared by all benchmarks: run
the same command again and nothing is regenerated or re-judged. Every check that needs no model runs
before the first answer (:func:`run_eval`); the results name the base model even when only an adapter
was given, and a benchmark whose judge replies all failed is flagged, not scored.
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
from trainer_min.eval.answer import AnswerSource, GenerationSettings, Question
from trainer_min.eval.common import write_json
from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import CACHE_FILE, Judge, JudgeError, JudgeStats
from trainer_min.eval.progress import ProgressBoard, silent
from trainer_min.hub import check_model
from trainer_min.load import base_model_of, resolve_device

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
    limit: int | None = None  # the first N questions of each benchmark
    device: str = "auto"


@dataclass
class Plan:
    """One benchmark, loaded and checked before any model loads or any answer is generated."""

    benchmark: str
    data: Path
    items: list[Any]
    questions: list[Question]
    prompt: str | None
    settings: dict[str, Any]

    @property
    def uses_judge(self) -> bool:
        return self.benchmark != "objhal" or self.settings["extract"] == "judge"


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


def check_options(options: EvalOptions) -> None:
    """The flags make sense together (no file is read)."""
    unknown = [b for b in options.benchmarks if b not in BENCHMARKS]
    if unknown:
        raise EvalError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)} or all")
    if options.model is None and options.adapter is None:
        raise EvalError("give --model (and --adapter for a trained LoRA adapter)")
    if _needs_judge(options) and not options.judge_model:
        raise EvalError(
            "give --judge-model (any OpenAI-compatible chat model; --judge-base-url for your own server), "
            "or --bench objhal --extract rules to score without a judge"
        )
    if options.runs < 1:
        raise EvalError(f"--runs must be 1 or more, got {options.runs}")
    if options.limit is not None and options.limit < 1:
        raise EvalError(f"--limit must be 1 or more, got {options.limit}")
    if not options.data.is_dir():
        raise EvalError(f"--data {options.data}: no such folder; give the folder of the benchmark files")
    if options.out.exists() and not options.out.is_dir():
        raise EvalError(f"--out {options.out} is a file; give a folder for the run")


def base_model(options: EvalOptions) -> str:
    """The base checkpoint: --model, else the one the adapter's files name (never null in the results)."""
    if options.model is not None:
        return options.model
    return base_model_of(options.adapter)


def plan(benchmark: str, options: EvalOptions) -> Plan:
    """Load and check one benchmark's files, prompts and questions (first --limit of them)."""
    data = benchmark_dir(options.data, benchmark, several=len(options.benchmarks) > 1)
    settings: dict[str, Any] = {"limit": options.limit}
    prompt = None
    if benchmark == "mmvet":
        items = mmvet.load_items(data)[: options.limit]
        questions = mmvet.questions(items, data)
        prompt = mmvet.load_prompt(options.prompt_file)
        settings.update(runs=options.runs, **_prompt_record(options.prompt_file, "official", prompt))
    elif benchmark == "llava-bench":
        items = llava_bench.load_items(data)[: options.limit]
        llava_bench.check_categories(items)
        questions = llava_bench.questions(items, data)
        settings.update(drop_failed=options.drop_failed)
    else:
        items = objhal.load_items(data)[: options.limit]
        objhal.annotation_paths(data)
        questions = objhal.questions(items, data)
        settings.update(extract=options.extract)
        if options.extract == "judge":
            prompt = objhal.load_prompt(options.objhal_prompt_file, options.objhal_prompt)
            settings.update(_prompt_record(options.objhal_prompt_file, options.objhal_prompt, prompt))
    return Plan(benchmark, data, items, questions, prompt, settings)


def run_eval(options: EvalOptions, board: ProgressBoard | None = None) -> dict[str, dict[str, Any]]:
    """Run every benchmark asked for; return their results by benchmark name.

    Everything that can be checked without the model is checked first, in this order: the flags, the
    device, the adapter, every benchmark's files, the base model (only when some answers must be
    generated), the judge's key and server (one request). Nothing is written into --out before.
    """
    board = board or silent()
    check_options(options)
    device = resolve_device(options.device)
    base = base_model(options)
    plans = [plan(benchmark, options) for benchmark in options.benchmarks]
    source = AnswerSource(base, options.adapter, options.generation, device=device, board=board)
    if any(not source.stored(p.questions, _answers_file(options, p)) for p in plans):
        flag = "--model" if options.model is not None else f"the base model of --adapter {options.adapter}"
        check_model(base, flag)
    judge = None
    if any(p.uses_judge for p in plans):
        judge = Judge(
            options.judge_model,
            options.out / CACHE_FILE,
            base_url=options.judge_base_url,
            api_key_env=options.judge_api_key_env,
            concurrency=options.judge_concurrency,
        )
        judge.check()
    results = {}
    try:
        for one in plans:
            if judge is not None and one.uses_judge:
                judge.stats = JudgeStats()
                judge.progress = board.task(f"{one.benchmark}: judging", counts=True)
            results[one.benchmark] = _run_one(one, options, source, judge)
    finally:
        if judge is not None:
            judge.close()
    return results


def _answers_file(options: EvalOptions, one: Plan) -> Path:
    return options.out / one.benchmark / "model_answers.json"


def _run_one(one: Plan, options: EvalOptions, source: AnswerSource, judge: Judge | None) -> dict[str, Any]:
    out = options.out / one.benchmark
    answers, generation = source.answers(one.questions, _answers_file(options, one), one.benchmark)
    if one.benchmark == "mmvet":
        metrics = mmvet.score(one.items, answers, judge, one.prompt, options.runs, out)
    elif one.benchmark == "llava-bench":
        name = options.adapter or source.model
        metrics = llava_bench.score(one.items, answers, judge, options.drop_failed, out, name)
    else:
        try:
            metrics = objhal.score(one.items, answers, one.data, out, options.extract, judge, one.prompt)
        except JudgeError as err:
            raise _with_prompt_hint(err, options) from err
        one.settings.update(reader=metrics["reader"], truth_reader=metrics["truth_reader"])
    results = {
        "benchmark": one.benchmark,
        "model": source.model,
        "adapter": options.adapter,
        "data": str(one.data),
        "generation": generation,
        "judge": judge.describe() if judge is not None and one.uses_judge else None,
        "settings": one.settings,
        "metrics": metrics,
    }
    write_json(out / RESULTS_FILE, results)
    failed = all_failed(metrics)
    if failed:
        log.warning("%s: no score: %s", one.benchmark, failed)
    return results


def all_failed(metrics: dict[str, Any]) -> str | None:
    """Why a benchmark has no score because every judge reply (or extraction) failed; None if it has one.

    LLaVA-Bench's official formula gives 100.0 when every review is unparsable (-1 / -1), MM-Vet 0.0 when
    every grade is: numbers that would read as results.
    """
    items = metrics.get("items", 0)
    if not items:
        return None
    if "capabilities" in metrics:
        unparsable = metrics.get("scored_zero_unparsable", 0)
        if unparsable >= items * metrics.get("runs", 1):
            return f"all {unparsable} MM-Vet grades were unparsable (scored 0); check the judge"
    elif "scores" in metrics:
        if metrics.get("failures", 0) >= items:
            return f"all {items} LLaVA-Bench reviews were unparsable; check the judge"
    elif metrics.get("extraction_failures", 0) >= items:
        return f"the objects of all {items} Object HalBench answers could not be extracted; check the judge"
    return None


def _with_prompt_hint(err: JudgeError, options: EvalOptions) -> JudgeError:
    """A failed extraction with RLHF-V's prompt may be a vision-language judge refusing its <image> marker."""
    if options.objhal_prompt_file is None and options.objhal_prompt == objhal.OFFICIAL:
        return JudgeError(
            f"{err} If the judge is a vision-language model (a LLaVA behind `transformers serve` answers "
            "HTTP 500 to the <image> marker of RLHF-V's prompt), add --objhal-prompt no-image-tag."
        )
    return err


def _prompt_record(path: Path | None, builtin: str, prompt: str) -> dict[str, str]:
    """Which prompt the judge got: a file's path, or the name of the bundled text; and its digest."""
    return {
        "prompt": str(path) if path is not None else builtin,
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
    }
