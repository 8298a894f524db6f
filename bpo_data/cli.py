"""``bpo-data``: generate pairs, export them as a dataset, publish it. Mirrors the Python API one to one."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone
from enum import Enum
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
    engine: Annotated[str | None, typer.Option(help="injection engine: hf | vllm | openai | rules")] = None,
    weaken_engine: Annotated[str | None, typer.Option(help="image-weakening engine: hf | vllm")] = None,
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
        if weaken_engine:
            raw["weaken"]["engine"] = weaken_engine
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
    table.add_row("models loaded", "yes" if summary.models_loaded else "no (nothing left to generate)")
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


class Executor(str, Enum):
    local = "local"
    ray = "ray"
    slurm = "slurm"


@app.command()
def launch(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="output folder all shards write to (storage every node sees)")
    ],
    num_shards: Annotated[int, typer.Option("--num-shards", "-n", min=1, help="how many shards, i/N")],
    executor: Annotated[
        Executor, typer.Option(help="local: this machine; ray: Ray tasks; slurm: an sbatch array")
    ] = Executor.local,
    recipe: Annotated[
        str | None, typer.Option("--recipe", "-r", help="recipe YAML, or a shipped name (bpo, demo…)")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="as for generate: a shipped source, a file, a name")
    ] = None,
    data: Annotated[str | None, typer.Option(help="annotation file for the source")] = None,
    image_root: Annotated[
        str | None, typer.Option(help="folder the records' image paths are relative to")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="injection engine, as for generate")] = None,
    weaken_engine: Annotated[str | None, typer.Option(help="image-weakening engine: hf | vllm")] = None,
    model: Annotated[str | None, typer.Option(help="the MLLM (hf id or local folder)")] = None,
    inject_model: Annotated[str | None, typer.Option(help="model for injection")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server for --engine openai")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | auto (within each shard's GPUs)")] = None,
    strict: Annotated[bool, typer.Option(help="stop a shard at its first bad record")] = False,
    gpus_per_shard: Annotated[int, typer.Option(min=0, help="GPUs each shard gets; 0 = CPU only")] = 1,
    max_retries: Annotated[
        int, typer.Option(min=0, help="local and ray: reruns of a failed shard (each resumes per record)")
    ] = 2,
    ray_address: Annotated[
        str | None, typer.Option(help="ray: cluster to join (default RAY_ADDRESS, else a local Ray)")
    ] = None,
    submit: Annotated[bool, typer.Option(help="slurm: submit the script with sbatch")] = False,
    script: Annotated[
        Path | None, typer.Option(help="slurm: where to write the script (default OUT/launch-slurm.sbatch)")
    ] = None,
    job_name: Annotated[str | None, typer.Option(help="slurm: job name (default bpo-<recipe name>)")] = None,
    partition: Annotated[str | None, typer.Option(help="slurm: partition")] = None,
    time_limit: Annotated[str | None, typer.Option("--time", help="slurm: time limit, e.g. 24:00:00")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(min=1, help="slurm: CPUs per shard")] = None,
    sbatch_option: Annotated[
        list[str] | None, typer.Option(help="slurm: another #SBATCH option, e.g. --mem=64G (repeatable)")
    ] = None,
    export_to: Annotated[
        Path | None, typer.Option("--export", help="local and ray: export once every shard has finished")
    ] = None,
) -> None:
    """Run all N shards of a recipe here, on a Ray cluster, or as a Slurm array; rerun to resume."""
    from bpo_data.launch import (
        LaunchError,
        SlurmOptions,
        gpu_slots,
        make_job,
        new_launch_id,
        run_local,
        run_ray,
        submit_slurm,
        visible_gpus,
        write_slurm_script,
    )

    try:
        recipe_path, sources, implied_data = _pick_recipe(recipe, source)
        spec = load_recipe(recipe_path)
    except (RecipeError, ValidationError, ValueError) as err:
        _fail(str(err))
    options = {
        "recipe": recipe_path,
        "source": sources[0] if sources else None,
        "data": data or implied_data,
        "image_root": image_root,
        "engine": engine,
        "weaken_engine": weaken_engine,
        "model": model,
        "inject_model": inject_model,
        "base_url": base_url,
        "device": device,
    }
    try:
        job = make_job(out, num_shards, options, strict)
        if executor is Executor.slurm:
            slurm = SlurmOptions(
                job_name=job_name or f"bpo-{spec.name}",
                gpus_per_shard=gpus_per_shard,
                partition=partition,
                time=time_limit,
                cpus_per_task=cpus_per_task,
                extra=tuple(sbatch_option or ()),
            )
            path = write_slurm_script(job, slurm, script)
            console.print(f"wrote the Slurm array script [bold]{path}[/]")
            if submit:
                print(submit_slurm(path))
            else:
                console.print(f"submit it with: sbatch {path}")
            console.print(f"follow it with: bpo-data status {job.out_dir}")
            return
        launch_id = new_launch_id()
        console.print(
            f"launch {launch_id}: {num_shards} shards into {job.out_dir} (logs in {job.out_dir}/logs)"
        )
        if executor is Executor.local:
            slots = gpu_slots(visible_gpus(), gpus_per_shard)
            outcomes = run_local(job, slots, max_retries, launch_id, report=console.print)
        else:
            outcomes = run_ray(job, gpus_per_shard, max_retries, launch_id, ray_address, report=console.print)
    except LaunchError as err:
        _fail(str(err))
    _print_launch_table(job, outcomes)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        for outcome in failed:
            console.print(outcome.error)
        names = ", ".join(f"{o.index}/{num_shards}" for o in failed)
        console.print(
            f"[bold red]error:[/] shard(s) {names} failed on all {max_retries + 1} attempts (logs above); "
            "fix the cause and rerun the same command: finished shards and records are skipped"
        )
        raise typer.Exit(1)
    if export_to is not None:
        _export([job.out_dir], export_to, spec.version)


def _print_launch_table(job, outcomes) -> None:
    from bpo_data.status import folder_status

    try:
        found = {(s.index, s.num_shards): s for s in folder_status(job.out_dir).shards}
    except FileNotFoundError:
        found = {}
    table = Table(title=f"{job.num_shards} shards in {job.out_dir}", caption=f"logs: {job.out_dir}/logs/")
    for column in ("shard", "result", "attempts", "done / planned", "pairs/s"):
        table.add_column(column)
    for outcome in outcomes:
        shard = found.get((outcome.index, job.num_shards))
        progress = f"{shard.done} / {shard.planned if shard.planned is not None else '?'}" if shard else "-"
        rate = f"{shard.pairs_per_s:.2f}" if shard and shard.pairs_per_s is not None else "-"
        table.add_row(
            f"{outcome.index}/{job.num_shards}",
            "ok" if outcome.ok else "[red]FAILED[/]",
            str(outcome.attempts),
            progress,
            rate,
        )
    console.print(table)


@app.command()
def status(
    out_dir: Annotated[Path, typer.Argument(help="a generation folder (any shard counts)")],
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON for scripts instead of a table")
    ] = False,
) -> None:
    """Per shard: units done / planned, rejects, pairs/s, last write, and whether a live process holds it."""
    import json

    from bpo_data.status import folder_status

    try:
        found = folder_status(out_dir)
    except FileNotFoundError as err:
        _fail(str(err))
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    planned = found.planned if found.planned is not None else "?"
    table = Table(title=f"{out_dir}: {found.done} / {planned} planned pairs done (pairs + final rejects)")
    for column in ("shard", "state", "done / planned", "rejects", "pairs/s", "last write", "process"):
        table.add_column(column)
    for shard in found.shards:
        rejects = sum(shard.rejects.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in shard.rejects.items())
        if shard.live:
            process = f"pid {shard.pid}" + (f" on {shard.host}" if shard.host else "")
        elif shard.pid is not None:
            process = f"none (pid {shard.pid} was killed)"
        else:
            process = "none"
        table.add_row(
            shard.shard,
            shard.state,
            f"{shard.done} / {shard.planned if shard.planned is not None else '?'}",
            f"{rejects} ({reasons})" if rejects else "0",
            f"{shard.pairs_per_s:.2f}" if shard.pairs_per_s is not None else "-",
            _since(shard.last_write),
            process,
        )
    Console().print(table)


def _since(iso: str | None) -> str:
    if iso is None:
        return "-"
    when = datetime.fromisoformat(iso).astimezone()
    seconds = (datetime.now(timezone.utc) - when).total_seconds()
    shown = f"{when:%H:%M:%S}" if when.date() == datetime.now().date() else f"{when:%Y-%m-%d %H:%M}"
    return f"{shown} ({seconds:.0f}s ago)"


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
