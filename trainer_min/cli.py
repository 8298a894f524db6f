"""`bpo-train`: LoRA DPO and the SFT baseline on LLaVA-1.5, merging, and the paper's Figure 7.

`dpo` and `sft` hand their arguments, untouched, to ``trainer_min.dpo.main`` / ``trainer_min.sft.main``,
which parse them with TRL's own parser (every TrainingArguments field is a flag; ``--config FILE.yaml``), so
``bpo-train dpo ARGS`` and ``python -m trainer_min.dpo ARGS`` are the same command. The benchmark commands
live in ``trainer_min.eval`` and are registered here as `bpo-train eval` and `bpo-train report`. Nothing
imports this module.
"""

from pathlib import Path
from typing import Annotated

import typer

from trainer_min.eval.cli import eval_command, report_command

app = typer.Typer(
    help="Train LLaVA-1.5 with LoRA DPO (BPO) or SFT on a bpo-data export; merge adapters; plot Figure 7.",
    no_args_is_help=True,
    add_completion=False,
)

# The training commands take every argument as is (their --help is TRL's parser's, not click's).
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


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
    dtype: Annotated[
        str, typer.Option(help="auto (the base checkpoint's), float32, bfloat16 or float16.")
    ] = "auto",
) -> None:
    """Fold an adapter into its base model: a plain LlavaForConditionalGeneration checkpoint."""
    from trainer_min.merge import merge_adapter

    try:
        out = merge_adapter(adapter, to, model_id=model, dtype=dtype)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"merged model and processor written to {out}")


@app.command()
def plot(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories (their logprobs.csv), one panel each.")
    ],
    to: Annotated[Path, typer.Option(help="PNG file to write.")],
    bins: Annotated[int, typer.Option(help="Intervals of equally many logged steps.")] = 10,
    error: Annotated[str, typer.Option(help="Error bars: std of the steps in an interval, or sem.")] = "std",
) -> None:
    """The paper's Figure 7: mean chosen/rejected log-prob per interval (DPO), ground truth (SFT)."""
    from trainer_min.plot import plot_runs

    try:
        out = plot_runs(run_dirs, to, bins=bins, error=error)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    typer.echo(f"wrote {out}")


app.command("eval")(eval_command)
app.command("report")(report_command)
