"""``eval`` and ``report``: the commands ``bpo-train`` registers, also run by ``python -m trainer_min.eval``.

Both are plain typer-compatible functions, so any typer app can register them under any name; errors end
them through the app's :class:`~trainer_min.errors.GuardedGroup` (one ``error:`` line, exit code 2). What
a pipe wants (the results files, the report table) goes to stdout; progress and notes go to stderr, and
the HTTP clients' per-request log lines are kept quiet.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trainer_min.errors import EvalGroup, enable_debug, quiet_library_warnings
from trainer_min.eval.answer import GenerationSettings
from trainer_min.eval.progress import ProgressBoard
from trainer_min.eval.report import write_report
from trainer_min.eval.run import BENCHMARKS, EvalOptions, all_failed, run_eval

# Libraries that log one line per HTTP request at INFO.
QUIET_LOGGERS = ("httpx", "httpcore", "openai", "urllib3", "huggingface_hub")


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


class _Stderr(logging.Handler):
    """Log lines on whatever ``sys.stderr`` is now (a live progress display moves them above itself)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def setup_logging() -> None:
    """This project's notes at INFO on stderr; the root logger and the HTTP clients stay at WARNING."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("trainer_min", "bpo_data"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if name == "trainer_min" else logging.WARNING)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            logger.addHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def show_version(value: bool) -> None:
    """``--version``: the installed bpo-data's version."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"bpo-data {version('bpo-data')}")
        except PackageNotFoundError:
            typer.echo("bpo-data (not installed as a package)")
        raise typer.Exit()


# The options every command group takes (bpo-train, python -m trainer_min.eval).
VersionFlag = Annotated[
    bool, typer.Option("--version", is_eager=True, callback=show_version, help="Show the version and exit.")
]
DebugFlag = Annotated[
    bool, typer.Option("--debug", help="Show the traceback of an expected error too (or set BPO_DEBUG=1).")
]


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
            help="Object HalBench extraction prompt. official: RLHF-V's text, for a text-only judge (GPT-4). "
            "no-image-tag: the same text without its <image> marker, for a vision-language judge (a LLaVA "
            "behind `transformers serve` answers HTTP 500 to the marker)",
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
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="answer and score the first N questions of each benchmark only"),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="where the model answers: auto (a GPU if any), cpu, cuda[:N], mps")
    ] = "auto",
) -> None:
    """Answer benchmark questions with a model or trained adapter; score them as the official scripts do."""
    setup_logging()
    quiet_library_warnings()
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
        limit=limit,
        device=device,
    )
    with ProgressBoard() as board:
        results = run_eval(options, board)
    for benchmark, result in results.items():
        where = out / benchmark / "results.json"
        typer.echo(f"{benchmark}: {_headline(result['metrics'])}  {where}")


def _headline(metrics: dict) -> str:
    failed = all_failed(metrics)
    if failed:
        return f"no score: {failed}"
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
    text = write_report(run_dirs, to, paper_13b, paper_ablation)
    typer.echo(text)
    typer.echo(f"written to {to}", err=True)


app = typer.Typer(
    cls=EvalGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Benchmarks of the BPO paper.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(version: VersionFlag = False, debug: DebugFlag = False) -> None:
    """MM-Vet, LLaVA-Bench in-the-wild and Object HalBench, scored as their official scripts score."""
    enable_debug(debug)


app.command("eval")(eval_command)
app.command("report")(report_command)
