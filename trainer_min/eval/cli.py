"""``eval`` and ``report``: the commands ``bpo-train`` registers, also run by ``python -m trainer_min.eval``.

Both are plain typer-compatible functions, so any typer app can register them under any name.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from trainer_min.eval.answer import GenerationSettings
from trainer_min.eval.errors import EvalError
from trainer_min.eval.report import write_report
from trainer_min.eval.run import BENCHMARKS, EvalOptions, run_eval

console = Console(stderr=True)


class Bench(str, Enum):
    mmvet = "mmvet"
    llava_bench = "llava-bench"
    objhal = "objhal"
    all = "all"


class ObjHalPrompt(str, Enum):
    official = "official"
    no_image_tag = "no-image-tag"


class Extract(str, Enum):
    judge = "judge"
    rules = "rules"


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def eval_command(
    bench: Annotated[Bench, typer.Option("--bench", help="benchmark to run; all = the three")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="the benchmark's files (with --bench all: a folder holding mmvet/, llava-bench/, objhal/)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="run folder: answers, judge cache, results")],
    model: Annotated[
        str | None, typer.Option("--model", help="LLaVA-1.5 checkpoint (hub id or folder)")
    ] = None,
    adapter: Annotated[str | None, typer.Option("--adapter", help="trained LoRA adapter folder")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="judge model name")] = None,
    judge_base_url: Annotated[
        str | None, typer.Option("--judge-base-url", help="OpenAI-compatible server (default: OpenAI)")
    ] = None,
    judge_api_key_env: Annotated[
        str, typer.Option("--judge-api-key-env", help="environment variable holding the judge's API key")
    ] = "OPENAI_API_KEY",
    judge_concurrency: Annotated[int, typer.Option("--judge-concurrency", min=1)] = 8,
    runs: Annotated[
        int, typer.Option("--runs", min=1, help="MM-Vet grading runs (mean ± population std)")
    ] = 1,
    prompt_file: Annotated[
        Path | None,
        typer.Option("--prompt-file", help="MM-Vet grader prompt to use instead of the official one"),
    ] = None,
    objhal_prompt: Annotated[
        ObjHalPrompt,
        typer.Option(
            "--objhal-prompt",
            help="Object HalBench extraction prompt: RLHF-V's text, or the same without its <image> marker "
            "(for a LLaVA judge served by `transformers serve`, which rejects the marker)",
        ),
    ] = ObjHalPrompt.official,
    objhal_prompt_file: Annotated[
        Path | None,
        typer.Option(
            "--objhal-prompt-file", help="Object HalBench extraction prompt file ({question}, {answer})"
        ),
    ] = None,
    drop_failed: Annotated[
        bool, typer.Option("--drop-failed", help="LLaVA-Bench: leave unparsable reviews out of the means")
    ] = False,
    extract: Annotated[
        Extract, typer.Option("--extract", help="Object HalBench objects: by the judge or by CHAIR rules")
    ] = Extract.judge,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="questions per generation batch")
    ] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 1024,
) -> None:
    """Answer benchmark questions with a model or trained adapter; score them as the official scripts do."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per judge call otherwise
    options = EvalOptions(
        benchmarks=list(BENCHMARKS) if bench is Bench.all else [bench.value],
        data=data,
        out=out,
        model=model,
        adapter=adapter,
        judge_model=judge_model,
        judge_base_url=judge_base_url,
        judge_api_key_env=judge_api_key_env,
        judge_concurrency=judge_concurrency,
        runs=runs,
        prompt_file=prompt_file,
        objhal_prompt_file=objhal_prompt_file,
        objhal_prompt=objhal_prompt.value,
        drop_failed=drop_failed,
        extract=extract.value,
        generation=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size),
    )
    try:
        results = run_eval(options)
    except EvalError as err:
        _fail(str(err))
    for benchmark, result in results.items():
        where = out / benchmark / "results.json"
        console.print(f"{benchmark}: {_headline(result['metrics'])} → {where}", soft_wrap=True)


def _headline(metrics: dict) -> str:
    if "capabilities" in metrics:
        return f"total {metrics['total']}" + (f" ± {metrics['std']}" if metrics["runs"] > 1 else "")
    if "scores" in metrics:
        return f"all {metrics['scores']['all']['score']} ({metrics['failures']} unparsable reviews)"
    resp, obj = metrics["resp"], metrics["obj"]
    return (
        f"Resp. {'–' if resp is None else f'{resp:.1f}'}, Obj. {'–' if obj is None else f'{obj:.1f}'} "
        f"({metrics['extraction_failures']} extraction failures)"
    )


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="run folders written by eval (--out)")],
    to: Annotated[Path, typer.Option("--to", help="Markdown file to write")] = Path("report.md"),
    paper_13b: Annotated[
        bool, typer.Option("--paper-13b", help="also show the paper's LLaVA-1.5-13B rows")
    ] = False,
    paper_ablation: Annotated[
        bool,
        typer.Option(
            "--paper-ablation", help="also show the paper's Table 4 (self-generated vs image-weakened, 7B)"
        ),
    ] = False,
) -> None:
    """Print and write a Markdown table of runs shaped like the BPO paper's Table 2, with the paper's rows."""
    try:
        text = write_report(run_dirs, to, paper_13b, paper_ablation)
    except EvalError as err:
        _fail(str(err))
    typer.echo(text)
    console.print(f"written to {to}")


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmarks of the BPO paper.")
app.command("eval")(eval_command)
app.command("report")(report_command)
