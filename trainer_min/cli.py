"""`bpo-train`: LoRA DPO and the SFT baseline on LLaVA-1.5, merging, and the paper's Figure 7.

`dpo` and `sft` hand their arguments, untouched, to ``trainer_min.dpo.main`` / ``trainer_min.sft.main``,
which parse them with TRL's own parser (every TrainingArguments field is a flag; ``--config FILE.yaml``), so
``bpo-train dpo ARGS`` and ``python -m trainer_min.dpo ARGS`` are the same command. The benchmark commands
live in ``trainer_min.eval`` and are registered here as `bpo-train eval` and `bpo-train report`. Nothing
imports this module.
"""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trainer_min.errors import GuardedGroup, enable_debug, quiet_library_warnings
from trainer_min.eval.cli import DebugFlag, VersionFlag, eval_command, report_command

app = typer.Typer(
    cls=GuardedGroup,
    help="Train LLaVA-1.5 with LoRA DPO (BPO) or SFT on a bpo-data export; merge adapters; plot Figure 7; "
    "run and report the paper's benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The training commands take every argument as is (their --help is TRL's parser's, not click's).
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ErrorBars(str, Enum):
    std = "std"
    sem = "sem"


@app.callback()
def main(version: VersionFlag = False, debug: DebugFlag = False) -> None:
    """Every command: one `error:` line (exit code 2) for what the user can fix; no deprecation noise."""
    enable_debug(debug)
    quiet_library_warnings()


@app.command("dpo", context_settings=PASS_THROUGH, add_help_option=False)
def dpo(ctx: typer.Context) -> None:
    """LoRA DPO (BPO) with stock TRL; the paper's settings by default. `--help` lists every flag."""
    from trainer_min.dpo import main

    raise typer.Exit(main(ctx.args, prog="bpo-train dpo"))


@app.command("sft", context_settings=PASS_THROUGH, add_help_option=False)
def sft(ctx: typer.Context) -> None:
    """The SFT baseline: the same LoRA on the chosen answers only. `--help` lists every flag."""
    from trainer_min.sft import main

    raise typer.Exit(main(ctx.args, prog="bpo-train sft"))


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option(help="A run's --output-dir (or one of its checkpoint-* dirs).")],
    to: Annotated[Path, typer.Option(help="New directory for the merged model.")],
    model: Annotated[
        str | None, typer.Option(help="Base model; default: the one named in the adapter's files.")
    ] = None,
    dtype: Annotated[Dtype, typer.Option(help="auto is the base checkpoint's own.")] = Dtype.auto,
) -> None:
    """Fold an adapter into its base model: a plain LlavaForConditionalGeneration checkpoint with a card."""
    from trainer_min.hub import check_model
    from trainer_min.load import base_model_of
    from trainer_min.merge import merge_adapter

    base = model or base_model_of(adapter)
    check_model(base, "--model" if model else f"the base model named in {adapter}")
    out = merge_adapter(adapter, to, model_id=model, dtype=dtype.value)
    typer.echo(out)
    typer.echo(f"merged model, processor and model card written to {out}", err=True)


@app.command()
def plot(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories (their logprobs.csv), one column of panels each.")
    ],
    to: Annotated[Path, typer.Option(help="PNG file to write.")],
    bins: Annotated[int, typer.Option(min=1, help="Intervals of equally many logged steps.")] = 10,
    error: Annotated[
        ErrorBars, typer.Option(help="Error bars: std of the steps in an interval, or sem.")
    ] = ErrorBars.std,
) -> None:
    """The paper's Figure 7: answer log-probs per interval, and DPO's reward margins and accuracies."""
    from trainer_min.plot import plot_runs

    out = plot_runs(run_dirs, to, bins=bins, error=error.value)
    typer.echo(out)


@app.command("world-repro")
def world_repro(
    out: Annotated[Path, typer.Option(help="Folder for the world, pairs, runs, evaluations and report.md.")],
    world: Annotated[
        Path | None,
        typer.Option(
            help="A world made by `bpo-data world make`; default: remake the model's own world in --out."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="The base model: 'world' for the shipped world model, or a model folder.")
    ] = "world",
    scenes: Annotated[
        int | None,
        typer.Option(min=1, help="Training scenes when the world is made here (default: the model's)."),
    ] = None,
    units: Annotated[
        int | None,
        typer.Option(min=4, help="Training units made into pairs (each: a weakened and an injected)."),
    ] = None,
    inject_units: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="More training units with an injected negative only, the next units of the sample "
            "(default: as many as --units; 0: none).",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Optimizer steps of the full BPO run (all runs: the same epochs)."),
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate of every run.")] = None,
    beta: Annotated[
        float | None, typer.Option(min=0.0, help="DPO beta (default 0.1, the paper's); higher keeps recall.")
    ] = None,
    noise_step: Annotated[
        int | None, typer.Option(min=1, max=999, help="Noise step of the weakened pairs.")
    ] = None,
    eval_scenes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Held-out scenes per split every run is measured on (default 1000; at most what the world "
            "holds: `bpo-data world make --eval-scenes`).",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the pairs and training (a world made here keeps the model's seed)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default 1).")] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Runs trained and evaluated side by side, each a process with --threads threads "
            "(default: the usable cores over --threads).",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            help="Measure the weakened pairs' evidence (CLIP scores too with bpo-data[verify]) and also "
            "train BPO on the pairs the default filters keep."
        ),
    ] = True,
    quick: Annotated[bool, typer.Option(help="A few minutes: few pairs, steps and held-out scenes.")] = False,
) -> None:
    """The paper's claim in miniature on CPU: pairs, BPO and its ablations, evaluation, report.md."""
    from dataclasses import replace

    from trainer_min.world_repro import ReproSettings, reproduce, summary_table

    settings = ReproSettings.quick() if quick else ReproSettings()
    given = {
        "scenes": scenes,
        "units": units,
        "inject_units": inject_units,
        "steps": steps,
        "learning_rate": learning_rate,
        "beta": beta,
        "noise_step": noise_step,
        "eval_scenes": eval_scenes,
        "seed": seed,
        "threads": threads,
        "jobs": jobs,
    }
    settings = replace(settings, verify=verify, **{k: v for k, v in given.items() if v is not None})
    if jobs is None:
        from bpo_data.launch import usable_cores

        settings = replace(settings, jobs=max(1, usable_cores() // settings.threads))
    from bpo_data.models import resolve_model

    results = reproduce(
        out, Path(resolve_model(model)), settings, world=world, log=lambda m: typer.echo(m, err=True)
    )
    typer.echo(summary_table(results))


@app.command("world-eval")
def world_eval(
    world: Annotated[Path, typer.Option(help="A world made by `bpo-data world make`.")],
    model: Annotated[
        str, typer.Option(help="The base model: 'world' for the shipped world model, or a model folder.")
    ] = "world",
    adapter: Annotated[
        Path | None, typer.Option(help="A LoRA adapter on the model, e.g. a world-repro run: OUT/runs/bpo.")
    ] = None,
    skip: Annotated[
        int,
        typer.Option(
            min=0,
            help="Leave out the first N held-out scenes of each split, e.g. those a setting was chosen on, "
            "to measure it on scenes it was not.",
        ),
    ] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Held-out scenes per split (default: all after --skip).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write metrics.json and the answers here.")] = None,
) -> None:
    """CHAIR, recall, QA and the prior of a world model, or of a run trained on it, on held-out scenes."""
    import json

    from bpo_data.models import resolve_model
    from bpo_data.world.evaluate import HeldOutError, format_report
    from trainer_min.world_repro import world_metrics

    try:
        report = world_metrics(
            resolve_model(model),
            str(adapter) if adapter else None,
            world,
            limit=limit,
            skip=skip,
            out_dir=out / "answers" if out else None,
            log=lambda m: typer.echo(m, err=True),
        )
    except HeldOutError as err:
        raise typer.BadParameter(str(err)) from None
    if out is not None:
        report.pop("examples", None)
        (out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    typer.echo(format_report(report))


app.command("eval")(eval_command)
app.command("report")(report_command)


if __name__ == "__main__":  # python -m trainer_min.cli: the same as bpo-train
    app()
