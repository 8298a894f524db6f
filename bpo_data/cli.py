"""``bpo-data``: generate pairs, export them as a dataset, publish it. Mirrors the Python API one to one.

Where the input is at fault (a flag, a file, a folder, a recipe, the disk) a command prints one
``error:`` line that says what to change and exits with status 2; ``_errors_at_the_boundary`` is
the one place that turns such exceptions into that line, so a new kind of error is one entry there.
Status 1 means the work itself failed and a rerun may succeed (a shard whose engine made nothing).
Heavy libraries are imported by the commands that use them, so ``--help`` answers at once.
``--debug`` (or ``BPO_DATA_DEBUG=1``) lets the traceback through instead.

Output meant for pipes (the ``load_dataset`` line, the paths written) goes to stdout; progress,
tables and messages go to stderr.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from bpo_data.recipe import Recipe


CONTEXT = {"help_option_names": ["-h", "--help"]}  # click hands it down to every subcommand and group
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, context_settings=CONTEXT)
console = Console(stderr=True)
DEBUG_ENV = "BPO_DATA_DEBUG"
_debug = False  # set per invocation by ``main``: --debug or BPO_DATA_DEBUG

SHIPPED_SOURCES = {
    "sharegptv": "sharegptv",
    "llavar": "llavar",
    "llava-instruct": "llava-instruct",
    "sample": "demo",
}
# Optional packages a command may find missing, and the extra that installs each.
EXTRAS = {"vllm": "vllm", "ray": "ray", "open_clip": "verify", "matplotlib": "train", "peft": "eval"}


def _show_version(value: bool) -> None:
    if value:
        print(f"bpo-data {metadata.version('bpo-data')}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=_show_version, is_eager=True, help="print the version and exit"),
]


@app.callback()
def main(
    version: VersionOption = False,
    debug: Annotated[
        bool, typer.Option("--debug", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    ] = False,
) -> None:
    global _debug
    _debug = debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    _quiet_libraries()


def _group_options(version: VersionOption = False) -> None:
    """Options every command group takes (``bpo-data world --version``)."""


def _quiet_libraries() -> None:
    """Quiet transformers and the Hub through their environment, read when (and if) they are imported."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("httpx", "httpx2", "openai"):  # one log line per request is noise at any scale
        logging.getLogger(name).setLevel(logging.WARNING)


def _fail(message: str, status: int = 2) -> None:
    """One ``error:`` line, not rich markup: ``pip install 'bpo-data[vllm]'`` keeps its brackets."""
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(status)


def _os_error(err: OSError) -> str:
    """An OSError as a sentence that names the path and what to do (our own errors already do)."""
    where = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "") if err.filename else None
    if err.errno == errno.ENOSPC:
        holding = f" holding {where}" if where else ""
        return f"no space left on the device{holding}; free space or write elsewhere (a rerun resumes)"
    if where is None:
        return str(err)
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"cannot write or read {where} ({err.strerror}); choose a folder you may write to, "
            "or fix its permissions"
        )
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}: {err.strerror} (a file stands where a folder is needed); choose another path"
    if err.errno == errno.EISDIR:
        return f"{where} is a folder where a file is needed; give the file"
    return f"{where}: {err.strerror}"


def _missing_package(err: ModuleNotFoundError) -> str:
    """A missing optional package as the pip line that installs it (printed as is, brackets kept)."""
    package = (err.name or "").split(".")[0]
    extra = EXTRAS.get(package)
    install = f"pip install 'bpo-data[{extra}]'" if extra else f"pip install {package}"
    return f"{package or err} is not installed and this command needs it: {install}"


# What the commands may raise because the input is at fault, and the line each one prints.
# (ValueError covers RecipeError, ManifestMismatch, GenerateError, ExportError, PushError, ModelNotFound.)
_INPUT_ERRORS: dict[type[BaseException], Callable[[BaseException], str]] = {
    ValueError: str,
    ModuleNotFoundError: _missing_package,
    OSError: _os_error,
}


@contextmanager
def _errors_at_the_boundary(*also: type[BaseException]) -> Iterator[None]:
    """Turn an input error raised inside into one ``error:`` line and exit status 2 (module docstring).

    ``also`` are a command's own error types (imported with the command), printed as they are.
    """
    handlers = {**_INPUT_ERRORS, **{kind: str for kind in also}}
    try:
        yield
    except tuple(handlers) as err:
        if _debug:
            raise
        handler = next(h for kind, h in handlers.items() if isinstance(err, kind))
        _fail(handler(err))


def _warn(message: str) -> None:
    console.print(Text("warning: ", style="yellow") + Text(message), soft_wrap=True)


def _pick_recipe(recipe: str | None, source: str | None) -> tuple[str, list[str] | None, str | None]:
    """Return (recipe path, sources to run, data path implied by --source PATH)."""
    from bpo_data import resources
    from bpo_data.recipe import resolve_recipe_path
    from bpo_data.sources import canonical_name, did_you_mean

    if recipe is None:
        if source is None:
            _fail("give --recipe, or --source sharegptv|llavar|llava-instruct|sample|PATH")
        try:
            shipped = canonical_name(source, SHIPPED_SOURCES)
        except ValueError:
            if Path(source).is_file():
                return str(resources.recipe_file("llava")), None, source
            _fail(
                f"--source {source!r} is neither a known source{did_you_mean(source, SHIPPED_SOURCES)} "
                f"({', '.join(SHIPPED_SOURCES)}) nor a file"
            )
        return str(resources.recipe_file(SHIPPED_SOURCES[shipped])), None, None
    path = str(resolve_recipe_path(recipe))
    if source is None:
        return path, None, None
    if Path(source).is_file():
        return path, None, source
    return path, [source], None


@contextmanager
def _progress_bar(enabled: bool, description: str) -> Iterator[Callable[[int, int], None] | None]:
    """A live bar on stderr, fed by the pipeline's (advance, new total) hook; None when disabled.

    The bar appears at the first call (when the plan is known), so a run that fails while checking
    its configuration prints its error without a dangling empty bar.
    """
    if not enabled:
        yield None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn())
    bar = Progress(*columns, TimeRemainingColumn(), console=console)
    task = bar.add_task(description, total=None)

    def hook(advance: int, new_total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        if new_total >= 0:
            bar.update(task, total=new_total)
        if advance:
            bar.advance(task, advance)

    try:
        yield hook
    finally:
        if bar.live.is_started:
            bar.stop()


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} pairs/s" if speed else "… pairs/s")


def _settings(
    *,
    model: str | None,
    injector: str | None,
    inject_model: str | None,
    weaken_engine: str | None,
    inject_engine: str | None,
    engine: str | None,
    base_url: str | None,
    device: str | None,
    concurrency: int | None,
    trust_image_dirs: list[Path] | None = None,
) -> dict:
    """Flag values for ``with_settings``; ``--engine`` is the deprecated spelling of two flags."""
    if engine is not None:
        if engine == "rules":
            _warn("--engine rules is deprecated: use --injector rules (rules is an injector, not an engine)")
            injector = injector or "rules"
        else:
            _warn(f"--engine is deprecated: use --inject-engine {engine}")
            inject_engine = inject_engine or engine
    return {
        "model": model,
        "injector": injector,
        "inject_model": inject_model,
        "weaken_engine": weaken_engine,
        "inject_engine": inject_engine,
        "base_url": base_url,
        "device": device,
        "concurrency": concurrency,
        "trust_image_dirs": [str(d.resolve()) for d in trust_image_dirs] if trust_image_dirs else None,
    }


def _load(recipe_path: str, settings: dict) -> Recipe:
    from bpo_data.recipe import load_recipe, with_settings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        loaded = with_settings(load_recipe(recipe_path), **settings)
    for warning in caught:
        _warn(f"{recipe_path}: {warning.message}")
    return loaded


def _recipe_sources(recipe: Recipe, sources: list[str] | None) -> list[str] | None:
    """``--source NAME`` as a source of the recipe: aliases resolved, a typo answered with a did-you-mean."""
    from bpo_data.sources import canonical_name

    if sources is None:
        return None
    try:
        return [canonical_name(name, [s.name for s in recipe.sources]) for name in sources]
    except ValueError as err:
        _fail(f"--source: recipe {recipe.name!r} has no such source: {err}")


def _check_device(device: str) -> None:
    """``--device`` names a device this torch build has (torch is imported only to ask it)."""
    if device in ("auto", "cpu"):
        return
    import torch

    try:
        wanted = torch.device(device)
    except RuntimeError:
        _fail(f"--device {device}: not a device; use cpu, cuda, cuda:N, mps or auto")
    if wanted.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build that finds no GPU"
            _fail(
                f"--device {device}: torch {torch.__version__} is {build}; use --device cpu "
                "(or auto), or install a CUDA build of torch on a machine with a GPU"
            )
        if wanted.index is not None and wanted.index >= count:
            _fail(f"--device {device}: only {count} GPU(s) are visible (cuda:0 to cuda:{count - 1})")
    elif wanted.type == "mps" and not torch.backends.mps.is_available():
        _fail(f"--device {device}: MPS is not available here; use --device cpu")
    elif wanted.type not in ("cuda", "mps", "cpu"):
        _fail(f"--device {device}: bpo-data runs on cpu, cuda or mps; use one of those or auto")


def _check_engines(recipe: Recipe, sources: list[str] | None) -> None:
    """Device, model and optional packages, checked before anything is read or written.

    Only what this run uses is checked: rules injection alone needs no model and no device.
    """
    from bpo_data.models import check_model

    kinds = recipe.negative_kinds(sources)
    engines = set()
    if "weaken" in kinds:
        engines.add(recipe.run.weaken.engine)
    if "inject" in kinds and recipe.inject.injector == "llm":
        engines.add(recipe.run.inject.engine)
    if "vllm" in engines and importlib.util.find_spec("vllm") is None:
        _fail("the vllm engine needs vLLM, which is not installed: pip install 'bpo-data[vllm]'")
    if engines & {"hf", "vllm"}:
        _check_device(recipe.run.device)
        check_model(recipe.model)


def _source_paths(recipe: Recipe, sources: list[str] | None, data: str | None, image_root: str | None):
    from bpo_data.generate import SourcePaths

    if not (data or image_root):
        return {}
    chosen = sources or [s.name for s in recipe.sources]
    if len(chosen) != 1:
        _fail(f"--data/--image-root need one source; pick one of {chosen} with --source")
    return {chosen[0]: SourcePaths(data=data, image_root=image_root)}


RecipeOption = Annotated[
    str | None, typer.Option("--recipe", "-r", help="recipe YAML, or a shipped name (bpo, demo…)")
]
SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source",
        "-s",
        help="sharegptv | llavar | llava-instruct | sample | a LLaVA-format file | a source of the recipe",
    ),
]
DataOption = Annotated[str | None, typer.Option(help="annotation file (JSON array or JSONL) for the source")]
ImageRootOption = Annotated[str | None, typer.Option(help="folder the records' image paths are relative to")]
ModelOption = Annotated[
    str | None, typer.Option(help="the MLLM (hf id or local folder; 'smoke' = tiny local model)")
]
InjectorOption = Annotated[
    str | None, typer.Option(help="what makes injected negatives: llm (a language model) | rules (no model)")
]
InjectModelOption = Annotated[
    str | None, typer.Option(help="the served model that rewrites, with --inject-engine openai")
]
WeakenEngineOption = Annotated[str | None, typer.Option(help="runs the weakened MLLM: hf | vllm")]
InjectEngineOption = Annotated[str | None, typer.Option(help="runs the llm injector: hf | vllm | openai")]
EngineOption = Annotated[
    str | None, typer.Option(help="deprecated: --inject-engine, or --injector rules", hidden=True)
]
BaseUrlOption = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server for --inject-engine openai")
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu | cuda | cuda:1 | auto")]
ConcurrencyOption = Annotated[
    int | None, typer.Option(min=1, help="requests in flight to the --inject-engine openai server")
]
TrustImageDirOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--trust-image-dir",
        help="a folder outside the image root that symbolic links inside it may lead to, e.g. "
        "--trust-image-dir /data/coco for a root holding coco -> /data/coco (repeatable)",
    ),
]


@app.command()
def generate(
    recipe: RecipeOption = None,
    source: SourceOption = None,
    data: DataOption = None,
    image_root: ImageRootOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default out/<recipe name>)")
    ] = None,
    shard: Annotated[str, typer.Option(help="this process's shard, i/N")] = "0/1",
    model: ModelOption = None,
    injector: InjectorOption = None,
    inject_model: InjectModelOption = None,
    weaken_engine: WeakenEngineOption = None,
    inject_engine: InjectEngineOption = None,
    engine: EngineOption = None,
    base_url: BaseUrlOption = None,
    device: DeviceOption = None,
    concurrency: ConcurrencyOption = None,
    trust_image_dir: TrustImageDirOption = None,
    strict: Annotated[bool, typer.Option(help="stop at the first record that cannot become a pair")] = False,
    export_to: Annotated[
        Path | None, typer.Option("--export", help="after the run, export the pairs to this dataset folder")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Make BPO preference pairs for one shard of a recipe; rerun the same command to resume."""
    from bpo_data.generate import ModelLoadError
    from bpo_data.generate import generate as run
    from bpo_data.pipeline import StrictModeError
    from bpo_data.store import ShardBusy, parse_shard_spec

    _quiet_libraries()
    with _errors_at_the_boundary(ShardBusy, StrictModeError, ModelLoadError):
        recipe_path, sources, implied_data = _pick_recipe(recipe, source)
        settings = _settings(
            model=model,
            injector=injector,
            inject_model=inject_model,
            weaken_engine=weaken_engine,
            inject_engine=inject_engine,
            engine=engine,
            base_url=base_url,
            device=device,
            concurrency=concurrency,
            trust_image_dirs=trust_image_dir,
        )
        spec = _load(recipe_path, settings)
        index, total = parse_shard_spec(shard)
        sources = _recipe_sources(spec, sources)
        paths = _source_paths(spec, sources, data or implied_data, image_root)
        _check_engines(spec, sources)
        out_dir = out or Path("out") / spec.name
        if spec.model == "smoke":
            _warn("smoke model: a tiny random LLaVA built locally; its weakened answers are noise")
        with _progress_bar(progress, f"{spec.name} shard {index}/{total}") as hook:
            summary = run(
                spec,
                out_dir,
                shard=(index, total),
                sources=sources,
                paths=paths,
                strict=strict,
                recipe_path=recipe_path,
                progress=hook,
            )
    _print_summary(summary, out_dir)
    for name in summary.empty_sources:
        _warn(f"source {name!r} holds no units (an empty file, [], or only records that were rejected)")
    if summary.engine_failed:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(summary.rejects.items()))
        example = summary.reject_examples.get("engine_error", "")
        _fail(
            f"shard {summary.shard} made no pair: its engine failed ({reasons}; e.g. {example[:300]}). "
            "Fix the engine (server, port, key, model) and rerun the same command: failed units are retried",
            status=1,
        )
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
    console.print("pairs and rejects (pairs-*.jsonl, rejects-*.jsonl) are in:")
    print(out_dir)


def _export(
    out_dirs: list[Path],
    to: Path,
    version: str,
    rows_per_file: int = 10_000,
    trust_image_dirs: list[Path] | None = None,
    filters: list | None = None,
    repo_id: str | None = None,
    test_size: float = 0.0,
) -> None:
    from bpo_data.export import export_dataset

    with _errors_at_the_boundary():
        stats = export_dataset(
            out_dirs,
            to,
            version=version,
            rows_per_file=rows_per_file,
            progress=True,
            repo_id=repo_id,
            trusted=[str(d.resolve()) for d in trust_image_dirs or ()],
            filters=filters or (),
            test_size=test_size,
        )
    files = len(stats.files)
    split = f"; test split {stats.test_pairs}" if stats.test_size else ""
    console.print(
        Text(f"exported {_plural(stats.pairs, 'pair')} to {to} ({_plural(files, 'parquet file')}{split})")
    )
    if stats.duplicates_dropped:
        console.print(f"  duplicates dropped: {stats.duplicates_dropped}")
    for reason, count in stats.filtered.items():
        console.print(f"  dropped ({reason}): {count}")
    for reason, count in sorted(stats.image_errors.items()):
        console.print(f"  skipped ({reason}): {count}")
    if stats.smoke:
        console.print(
            "[yellow]made with the smoke model: its weakened answers are noise; not for training[/]"
        )
    if not stats.composition_figure:
        _warn("no composition figure: matplotlib is not installed (pip install matplotlib)")
    print(f'from datasets import load_dataset; ds = load_dataset("{to}")["train"]')


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@app.command()
def export(
    out_dirs: Annotated[
        list[Path], typer.Argument(help="generation folders (any shard counts; merged by key)")
    ],
    to: Annotated[Path, typer.Option("--to", help="dataset folder to write")],
    version: Annotated[str, typer.Option(help="dataset version, X.Y.Z (a leading v is dropped)")] = "0.1.0",
    rows_per_file: Annotated[int, typer.Option(help="rows per parquet file")] = 10_000,
    repo_id: Annotated[
        str | None,
        typer.Option(help="the Hub repo it will be pushed to (fills the card's load_dataset line)"),
    ] = None,
    test_size: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.99,
            help="share of images held out as a test split, e.g. 0.05 (all pairs of an image "
            "stay on one side)",
        ),
    ] = 0.0,
    trust_image_dir: TrustImageDirOption = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="drop pairs missing a threshold, as in a recipe's filters: "
            "'min_claims_added=1' or 'min_clip_margin=0.02,negative_type=weaken' (repeatable)",
        ),
    ] = None,
) -> None:
    """Merge shards into data/train-*.parquet (images embedded) with a dataset card.

    Folders trusted by a generation run (--trust-image-dir) stay trusted for its pairs. Evidence
    from the generation run's verify step or from `bpo-data verify DIR` is published as columns.
    """
    _export(
        out_dirs,
        to,
        version,
        rows_per_file,
        trust_image_dir,
        [_filter_spec(f) for f in filters or ()],
        repo_id=repo_id,
        test_size=test_size,
    )


def _filter_spec(text: str):
    """``--filter 'min_clip_margin=0.02,negative_type=weaken'`` as a recipe ``FilterSpec``."""
    from pydantic import ValidationError

    from bpo_data.recipe import FilterSpec, error_lines

    fields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            _fail(f"--filter {text!r}: write NAME=VALUE pairs separated by commas, e.g. min_clip_margin=0.02")
        fields[name.strip()] = value.strip()
    try:
        return FilterSpec.model_validate(fields)
    except ValidationError as err:
        _fail(f"--filter {text!r}: " + "; ".join(error_lines(err)))


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="an exported dataset folder")],
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, e.g. me/bpo-pairs")],
    tag: Annotated[
        str | None,
        typer.Option(help="release tag, vX.Y.Z or X.Y.Z (default: the export's version); must match it"),
    ] = None,
    private: Annotated[bool, typer.Option(help="create the repo as private")] = False,
) -> None:
    """Upload an exported dataset to the Hugging Face Hub and tag the revision (token from HF login/env).

    The card's load_dataset line is set to --repo-id before the upload.
    """
    from bpo_data.push import push_dataset

    with _errors_at_the_boundary():
        url = push_dataset(folder, repo_id=repo_id, tag=tag, private=private)
    console.print(f"pushed {folder}:")
    print(url)


@app.command()
def preview(
    folder: Annotated[
        Path, typer.Argument(help="a generation folder (pairs-*.jsonl) or an exported dataset")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML page to write")] = Path("preview.html"),
    per_group: Annotated[int, typer.Option(min=1, help="pairs shown per source × negative type")] = 3,
) -> None:
    """Write one static HTML page of pairs (image, prompt, chosen vs rejected with the differences marked)."""
    from bpo_data.preview import PreviewError
    from bpo_data.preview import preview as write_preview

    with _errors_at_the_boundary(PreviewError):
        result = write_preview(folder, out, per_group=per_group)
    console.print(f"{_plural(result.pairs_shown, 'pair')} shown; open this page in a browser:")
    print(result.path)


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
    recipe: RecipeOption = None,
    source: SourceOption = None,
    data: DataOption = None,
    image_root: ImageRootOption = None,
    model: ModelOption = None,
    injector: InjectorOption = None,
    inject_model: InjectModelOption = None,
    weaken_engine: WeakenEngineOption = None,
    inject_engine: InjectEngineOption = None,
    engine: EngineOption = None,
    base_url: BaseUrlOption = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | auto (within each shard's GPUs)")] = None,
    concurrency: ConcurrencyOption = None,
    trust_image_dir: TrustImageDirOption = None,
    strict: Annotated[bool, typer.Option(help="stop a shard at its first bad record")] = False,
    gpus_per_shard: Annotated[int, typer.Option(min=0, help="GPUs each shard gets; 0 = CPU only")] = 1,
    cpu_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="local without GPUs: shards at once [default: the cores over the recipe's run.cpu_threads, "
            "else 1]",
        ),
    ] = None,
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
        default_cpu_workers,
        make_job,
        submit_slurm,
        write_slurm_script,
    )
    from bpo_data.launch import launch as run_launch

    with _errors_at_the_boundary(LaunchError):
        recipe_path, sources, implied_data = _pick_recipe(recipe, source)
        settings = _settings(
            model=model,
            injector=injector,
            inject_model=inject_model,
            weaken_engine=weaken_engine,
            inject_engine=inject_engine,
            engine=engine,
            base_url=base_url,
            device=device,
            concurrency=concurrency,
            trust_image_dirs=trust_image_dir,
        )
        spec = _load(recipe_path, settings)
        sources = _recipe_sources(spec, sources)
        paths = _source_paths(spec, sources, data or implied_data, image_root)
        if executor is Executor.local:  # Ray and Slurm shards run on other machines: their GPUs, their cache
            _check_engines(spec, sources)
        job = make_job(
            spec, out, num_shards, recipe_path=recipe_path, sources=sources, paths=paths, strict=strict
        )
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
            console.print(f"wrote the Slurm array script [bold]{path}[/] (job file {job.path})")
            if submit:
                print(submit_slurm(path))
            else:
                console.print(f"submit it with: sbatch {path}")
            console.print(f"follow it with: bpo-data status {job.out_dir}")
            return
        console.print(
            f"launch {job.launch_id}: {num_shards} shards into {job.out_dir} (logs in {job.out_dir}/logs)"
        )
        with _launch_view(job) as report:
            outcomes = run_launch(
                job,
                executor.value,
                gpus_per_shard=gpus_per_shard,
                max_retries=max_retries,
                ray_address=ray_address,
                report=report,
                cpu_workers=cpu_workers or default_cpu_workers(spec.run.cpu_threads),
            )
    _print_launch_table(job, outcomes)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        for outcome in failed:
            console.print(outcome.error, markup=False)
        names = ", ".join(f"{o.index}/{num_shards}" for o in failed)
        console.print(
            f"[bold red]error:[/] shard(s) {names} failed on all {max_retries + 1} attempts (logs above); "
            "fix the cause and rerun the same command: finished shards and records are skipped"
        )
        raise typer.Exit(1)
    if export_to is not None:
        _export([job.out_dir], export_to, spec.version)


@contextmanager
def _launch_view(job) -> Iterator[Callable[[str], None]]:
    """One live view of every shard while a launch runs: ``bpo-data status`` of its folder, redrawn.

    It reads the shard files as ``status`` does (every 5 s, so a large folder costs little); the
    executor's messages (a shard done, an attempt failed) are printed above it.
    """
    from rich.console import Group

    from bpo_data.status import StatusReader, folder_status

    started = time.monotonic()
    done_before: list[int] = []  # what the folder held when the launch began (a rerun resumes)
    reader = StatusReader(job.out_dir)  # each redraw parses only the lines written since the last

    def render():
        seconds = time.monotonic() - started
        line = f"launch {job.launch_id}: {_duration(seconds)} so far"
        try:
            found = folder_status(job.out_dir, reader)
        except FileNotFoundError:
            return Group(Text(f"waiting for the first of {job.num_shards} shards to start"), Text(line))
        done_before[:1] = done_before[:1] or [found.done]
        made = found.done - done_before[0]
        total = found.planned_estimate
        if made > 0 and seconds > 0:
            rate = made / seconds  # over the whole launch: shards waiting or loading their model count too
            line += f", {made} pairs at {rate:.2f} pairs/s"
            if total is not None and total > found.done:
                line += f", ETA {_duration((total - found.done) / rate)}"
        return Group(_status_table(found), Text(line))

    def report(message: str) -> None:
        console.print(Text(message))

    with Live(get_renderable=render, console=console, refresh_per_second=0.2, transient=True):
        yield report


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

    with _errors_at_the_boundary():
        found = folder_status(out_dir)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    Console().print(_status_table(found))


def _status_table(found):
    """Every shard of a folder (pending ones too), under a line with the folder's total and ETA."""
    from rich.console import Group

    if found.planned is None:
        planned = "?"
    elif found.planned_estimate != found.planned:
        planned = f"~{found.planned_estimate} (estimated: {found.pending} shard(s) not started)"
    else:
        planned = str(found.planned)
    eta = f"; ETA {_duration(found.eta_s)}" if found.eta_s is not None else ""
    headline = Text(f"{found.out_dir}: {found.done} / {planned} planned pairs done{eta}", style="bold")
    table = Table()
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
    return Group(headline, table)


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``: a length a person reads at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _since(iso: str | None) -> str:
    if iso is None:
        return "-"
    when = datetime.fromisoformat(iso).astimezone()
    seconds = (datetime.now(timezone.utc) - when).total_seconds()
    shown = f"{when:%H:%M:%S}" if when.date() == datetime.now().date() else f"{when:%Y-%m-%d %H:%M}"
    return f"{shown} ({'just now' if seconds < 5 else _duration(seconds) + ' ago'})"


def _mount_groups() -> None:
    """`bpo-data verify …` and `bpo-data world …` live beside what they run (neither imports torch)."""
    from bpo_data.verify.cli import verify_app
    from bpo_data.world.cli import world_app

    app.add_typer(verify_app, name="verify", callback=_group_options)
    app.add_typer(world_app, name="world", callback=_group_options)


_mount_groups()


if __name__ == "__main__":
    app(prog_name="bpo-data")
