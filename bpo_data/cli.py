"""``bpo-data``: generate pairs, export them as a dataset, publish it. Mirrors the Python API one to one."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bpo_data.recipe import Recipe, RecipeError, load_recipe, resolve_recipe_path

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)

SHIPPED_SOURCES = {
    "sharegptv": "sharegptv",
    "llavar": "llavar",
    "llava-instruct": "llava-instruct",
    "sample": "demo",
}


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _pick_recipe(recipe: str | None, source: str | None) -> tuple[str, list[str] | None, str | None]:
    """Return (recipe path, sources to run, data path implied by --source PATH)."""
    if recipe is None:
        if source is None:
            _fail("give --recipe, or --source sharegptv|llavar|llava-instruct|sample|PATH")
        if source in SHIPPED_SOURCES:
            return str(resolve_recipe_path(SHIPPED_SOURCES[source])), None, None
        if Path(source).is_file():
            return str(resolve_recipe_path("llava")), None, source
        _fail(f"--source {source!r} is neither a known source ({', '.join(SHIPPED_SOURCES)}) nor a file")
    path = str(resolve_recipe_path(recipe))
    if source is None:
        return path, None, None
    if Path(source).is_file():
        return path, None, source
    return path, [source], None


@app.command()
def generate(
    recipe: Annotated[
        str | None, typer.Option("--recipe", "-r", help="recipe YAML, or a shipped name (bpo, demo…)")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            "-s",
            help="sharegptv | llavar | llava-instruct | sample | a LLaVA-format file | "
            "a source name of the recipe",
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="annotation file (JSON array or JSONL) for the source")
    ] = None,
    image_root: Annotated[
        str | None, typer.Option(help="folder the records' image paths are relative to")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default out/<recipe name>)")
    ] = None,
    shard: Annotated[str, typer.Option(help="this process's shard, i/N")] = "0/1",
    engine: Annotated[str | None, typer.Option(help="injection engine: hf | openai | rules")] = None,
    model: Annotated[
        str | None, typer.Option(help="the MLLM (hf id or local folder; 'smoke' = tiny local model)")
    ] = None,
    inject_model: Annotated[
        str | None, typer.Option(help="model for injection (default: the MLLM's own LM)")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server for --engine openai")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:1 | auto")] = None,
    strict: Annotated[bool, typer.Option(help="stop at the first record that cannot become a pair")] = False,
    export_to: Annotated[
        Path | None, typer.Option("--export", help="after the run, export the pairs to this dataset folder")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Make BPO preference pairs for one shard of a recipe; rerun the same command to resume."""
    from bpo_data.generate import GenerateOptions, SourceOverride, StrictModeError
    from bpo_data.run import run_shard
    from bpo_data.store import ShardBusy, parse_shard_spec

    _quiet_libraries()
    try:
        recipe_path, sources, implied_data = _pick_recipe(recipe, source)
        spec = load_recipe(recipe_path)
        raw = spec.model_dump()
        raw.update({k: v for k, v in {"model": model, "device": device}.items() if v})
        raw["inject"].update(
            {k: v for k, v in {"engine": engine, "model": inject_model, "base_url": base_url}.items() if v}
        )
        spec = Recipe.model_validate(raw)
        index, total = parse_shard_spec(shard)
    except (RecipeError, ValidationError, ValueError) as err:
        _fail(str(err))
    data = data or implied_data
    overrides = {}
    if data or image_root:
        chosen = sources or [s.name for s in spec.sources]
        if len(chosen) != 1:
            _fail(f"--data/--image-root need one source; pick one of {chosen} with --source")
        overrides[chosen[0]] = SourceOverride(data=data, image_root=image_root)
    out_dir = out or Path("out") / spec.name
    options = GenerateOptions(
        out_dir=out_dir,
        shard_index=index,
        num_shards=total,
        sources=sources,
        overrides=overrides,
        strict=strict,
        recipe_path=recipe_path,
    )
    try:
        summary = run_shard(spec, options, console=console, progress=progress)
    except (ShardBusy, StrictModeError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    _print_summary(summary, out_dir)
    if export_to is not None:
        _export([out_dir], export_to, spec.version)


def _print_summary(summary, out_dir: Path) -> None:
    table = Table(title=f"shard {summary.shard}", show_header=False)
    table.add_row("units read", str(summary.units_read))
    table.add_row("units sampled for this shard", str(summary.units_seen))
    table.add_row("pairs planned", str(summary.pairs_planned))
    table.add_row("already done (resumed)", str(summary.already_done))
    table.add_row("pairs written", str(summary.pairs_written))
    table.add_row("rejects", str(sum(summary.rejects.values())))
    for reason, count in sorted(summary.rejects.items()):
        table.add_row(f"  {reason}", str(count))
    table.add_row("time", f"{summary.elapsed_s:.1f} s ({summary.pairs_per_s:.1f} pairs/s)")
    console.print(table)
    console.print(f"pairs: [bold]{out_dir}/pairs-*.jsonl[/]  rejects: {out_dir}/rejects-*.jsonl")


def _export(out_dirs: list[Path], to: Path, version: str, rows_per_file: int = 10_000) -> None:
    from bpo_data.export import ExportError, export_dataset

    try:
        stats = export_dataset(out_dirs, to, version=version, rows_per_file=rows_per_file, progress=True)
    except (ExportError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    console.print(f"exported {stats.pairs} pairs to [bold]{to}[/] ({len(stats.files)} parquet files)")
    if stats.duplicates_dropped:
        console.print(f"  duplicates dropped: {stats.duplicates_dropped}")
    for reason, count in sorted(stats.image_errors.items()):
        console.print(f"  skipped ({reason}): {count}")
    if stats.smoke:
        console.print(
            "[yellow]made with the smoke model: its weakened answers are noise; not for training[/]"
        )
    print(f'from datasets import load_dataset; ds = load_dataset("{to}")["train"]')


@app.command()
def export(
    out_dirs: Annotated[
        list[Path], typer.Argument(help="generation folders (any shard counts; merged by key)")
    ],
    to: Annotated[Path, typer.Option("--to", help="dataset folder to write")],
    version: Annotated[str, typer.Option(help="dataset version, X.Y.Z")] = "0.1.0",
    rows_per_file: Annotated[int, typer.Option(help="rows per parquet file")] = 10_000,
) -> None:
    """Merge shards into data/train-*.parquet (images embedded) with a dataset card."""
    _export(out_dirs, to, version, rows_per_file)


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="an exported dataset folder")],
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, e.g. me/bpo-pairs")],
    tag: Annotated[str, typer.Option(help="release tag, vX.Y.Z")],
    private: Annotated[bool, typer.Option(help="create the repo as private")] = False,
) -> None:
    """Upload an exported dataset to the Hugging Face Hub and tag the revision (token from HF login/env)."""
    from bpo_data.push import push_dataset

    try:
        url = push_dataset(folder, repo_id=repo_id, tag=tag, private=private)
    except ValueError as err:
        _fail(str(err))
    console.print(f"pushed {folder} to {url}")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
