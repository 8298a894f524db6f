"""`bpo-train`: LoRA DPO and the SFT baseline on LLaVA-1.5, merging, and the paper's Figure 7.

The flags of `dpo` and `sft` are generated from :class:`TrainConfig` (one flag per field; `--help`
shows each default and its source), so the CLI, the Python API and `training_config.json` cannot drift
apart. `--config FILE.yaml` sets flags from a file whose keys are the flags; flags given on the
command line win. The benchmark commands live in `trainer_min.eval` and are registered here as
`bpo-train eval` and `bpo-train report`.
"""

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from trainer_min.config import TrainConfig, defaults, field_types, fields_for, read_yaml_settings, source_of
from trainer_min.data import DataError
from trainer_min.eval.cli import eval_command, report_command

app = typer.Typer(
    help="Train LLaVA-1.5 with LoRA DPO (BPO) or SFT on a bpo-data export; merge adapters; plot Figure 7.",
    no_args_is_help=True,
    add_completion=False,
)


def _config_file_callback(objective: str):
    """Make the YAML file's settings the defaults of the other flags (click's default_map)."""

    def load(ctx: typer.Context, path: Path | None) -> Path | None:
        if path is not None:
            try:
                settings = read_yaml_settings(path, objective)
            except ValueError as err:
                raise typer.BadParameter(str(err)) from err
            ctx.default_map = {**(ctx.default_map or {}), **settings}
        return path

    return load


def _train_command(objective: str):
    """A command whose keyword parameters are TrainConfig's fields for ``objective``."""
    types = field_types()
    field_defaults = defaults(objective)
    parameters = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    "--config",
                    help="YAML file whose keys are these flags (e.g. trainer_min/configs/bpo_dpo.yaml).",
                    is_eager=True,
                    exists=True,
                    dir_okay=False,
                    callback=_config_file_callback(objective),
                ),
            ],
        )
    ]
    for field in fields_for(objective):
        source = source_of(objective, field.name)
        option = typer.Option(help=field.metadata["help"] + (f" Source: {source}." if source else ""))
        parameters.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=field_defaults.get(field.name, inspect.Parameter.empty),
                annotation=Annotated[types[field.name], option],
            )
        )

    def command(**values: Any) -> None:
        values.pop("config")
        try:
            cfg = TrainConfig.for_objective(objective, **values)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err
        if objective == "dpo":
            from trainer_min.dpo import train_dpo as train
        else:
            from trainer_min.sft import train_sft as train
        try:
            trainer = train(cfg)
        except (DataError, FileExistsError, FileNotFoundError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        if trainer.is_world_process_zero():
            out = cfg.output_dir
            typer.echo(f"trained {trainer.state.global_step} steps; the run is in {out}")
            typer.echo(f"figure 7:  bpo-train plot {out} --to {out}/figure7.png")
            typer.echo(f"merge:     bpo-train merge --adapter {out} --to {out}-merged")

    command.__signature__ = inspect.Signature(parameters)
    return command


app.command(
    "dpo",
    help="LoRA DPO (BPO) with stock TRL; the paper's settings by default. Also: python -m trainer_min.dpo.",
)(_train_command("dpo"))
app.command(
    "sft",
    help="The SFT baseline: the same LoRA on the chosen answers only. Also: python -m trainer_min.sft.",
)(_train_command("sft"))


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


def run_command(name: str, args: list[str], prog_name: str) -> None:
    """Run one subcommand as a program of its own (``python -m trainer_min.dpo``)."""
    group = typer.main.get_command(app)
    command = group.get_command(typer.Context(group), name)
    command.main(args=args, prog_name=prog_name)
