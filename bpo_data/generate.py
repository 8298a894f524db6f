"""Generate one shard of a recipe: the Python API behind ``bpo-data generate`` and ``launch``.

A shard is a readable list of steps (``bpo_data.pipeline``), run in one direction::

    read → shard → sample → skip done → load images → make negatives → verify → filters → write

A first pass over the sources decides the sample (bottom-k over the whole source, whatever the
shard count) and each unit's negative types; the second pass streams units through the steps.
Every group of finished pairs and rejects is written durably before more are made, so ``kill -9``
(or SIGTERM, which unwinds like Ctrl-C) loses at most that group and a rerun of the same call
finishes the work.

What a run says about itself (``RunSummary``): a shard that had work and made no pair because its
engine failed every time (a server down, a wrong port, a refused key) is ``engine_failed``, which
the CLI and ``launch`` turn into a non-zero exit so the shard is retried; a source that holds no
units at all is listed in ``empty_sources``, a warning, not a failure. Models and their libraries
are imported only once there is a unit to make, so a rerun of a finished shard takes moments.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bpo_data.jsonl import count_lines
from bpo_data.manifest import check_manifest, source_record, write_manifest
from bpo_data.pipeline import Step, ThresholdFilter, run_steps
from bpo_data.pipeline.steps import LoadImages, ReadUnits, Sample, Shard, SkipDone, Write
from bpo_data.plan import Plan, finished_plan, make_plan, plan_basis, shard_files_stamp
from bpo_data.recipe import Recipe, RecipeError, SourceSpec
from bpo_data.schema import Reject, Unit
from bpo_data.sources import read_units, source_files
from bpo_data.store import RETRYABLE_REASONS, ShardStore

if TYPE_CHECKING:
    from bpo_data.engines.build import Engines
    from bpo_data.inject.cooccurrence import CoOccurrence
    from bpo_data.pipeline.make import NegativeMaker

ProgressHook = Callable[[int, int], None]  # (advance, new total or -1)


class GenerateError(ValueError):
    """A shard that cannot run as asked (an --out that is a file, say); the message says what to change."""


class ModelLoadError(RuntimeError):
    """The engines (a model, a server client) could not be built; the message names the model and cause."""


@dataclass
class SourcePaths:
    """Where a source's files are on this machine, when not (or not only) in the recipe."""

    data: str | None = None
    image_root: str | None = None


@dataclass
class GenerateOptions:
    out_dir: Path
    shard_index: int = 0
    num_shards: int = 1
    sources: list[str] | None = None
    paths: dict[str, SourcePaths] = field(default_factory=dict)
    strict: bool = False
    recipe_path: str = ""
    steps: Sequence[Step] = ()  # extra filter steps, after the recipe's, before the writer


@dataclass
class RunSummary:
    shard: str
    units_read: int = 0
    units_seen: int = 0
    pairs_planned: int = 0
    already_done: int = 0
    pairs_written: int = 0
    rejects: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    load_s: float = 0.0  # building engines and loading models, within elapsed_s
    torn_bytes_repaired: int = 0
    models_loaded: bool = False
    steps: dict[str, dict[str, int]] = field(default_factory=dict)
    empty_sources: list[str] = field(default_factory=list)  # sources that held no unit at all
    reject_examples: dict[str, str] = field(default_factory=dict)  # the first detail of each reason

    @property
    def pairs_per_s(self) -> float:
        """Pairs per second of making them: model loading is left out, as the progress bar leaves it out."""
        working = self.elapsed_s - self.load_s
        return self.pairs_written / working if working > 0 else 0.0

    @property
    def engine_failed(self) -> bool:
        """No pair made, and the engine failed: retry the shard rather than call it finished."""
        return self.pairs_written == 0 and any(self.rejects.get(r) for r in RETRYABLE_REASONS)

    def to_dict(self) -> dict:
        return {
            "shard": self.shard,
            "units_read": self.units_read,
            "units_seen": self.units_seen,
            "pairs_planned": self.pairs_planned,
            "already_done": self.already_done,
            "pairs_written": self.pairs_written,
            "rejects": dict(self.rejects),
            "elapsed_s": round(self.elapsed_s, 3),
            "load_s": round(self.load_s, 3),
            "pairs_per_s": round(self.pairs_per_s, 3),
            "models_loaded": self.models_loaded,
            "engine_failed": self.engine_failed,
            "empty_sources": self.empty_sources,
            "reject_examples": self.reject_examples,
            "steps": self.steps,
        }


def selected_sources(recipe: Recipe, names: list[str] | None) -> list[SourceSpec]:
    if not names:
        return list(recipe.sources)
    unknown = sorted(set(names) - {s.name for s in recipe.sources})
    if unknown:
        raise RecipeError(
            f"recipe {recipe.name!r} has no source {unknown}; it has {[s.name for s in recipe.sources]}"
        )
    return [s for s in recipe.sources if s.name in names]


def source_reader(
    recipe: Recipe, paths: dict[str, SourcePaths]
) -> Callable[[SourceSpec], Iterable[Unit | Reject]]:
    """Read a source with this machine's paths (CLI flags win over the recipe's)."""

    def read(spec: SourceSpec) -> Iterable[Unit | Reject]:
        given = paths.get(spec.name, SourcePaths())
        return read_units(
            spec,
            seed=recipe.seed,
            data=given.data or spec.data,
            image_root=given.image_root or spec.image_root,
            limits=recipe.text,
        )

    return read


def source_records(specs: list[SourceSpec], paths: dict[str, SourcePaths]) -> dict[str, dict]:
    """What the manifest records of each source's files (checked now, so a wrong path fails at once)."""
    records = {}
    for spec in specs:
        given = paths.get(spec.name, SourcePaths())
        data, image_root = source_files(spec, given.data or spec.data, given.image_root or spec.image_root)
        records[spec.name] = source_record(data, image_root)
    return records


def _maker_class(kind: str):
    """The maker of a negative type, imported only when a unit of that type is made (torch comes with it)."""
    if kind == "weaken":
        from bpo_data.weaken.negatives import WeakenedNegatives

        return WeakenedNegatives
    from bpo_data.inject.negatives import InjectedNegatives

    return InjectedNegatives


def needs_pixels(kind: str) -> bool:
    """Whether the maker of ``kind`` looks at the image (only then is it decoded)."""
    return _maker_class(kind).needs_image


def build_makers(
    recipe: Recipe, kinds: set[str], engines: Engines, cooccurrence: dict[str, CoOccurrence] | None = None
) -> dict[str, NegativeMaker]:
    """The maker of each negative type the run needs, on the engines built for it (``cooccurrence``:
    what each source's answers name together, from the plan, for the rules injector)."""
    makers: dict[str, NegativeMaker] = {}
    if "weaken" in kinds:
        makers["weaken"] = _maker_class("weaken")(
            engines.vision, recipe.weaken, recipe.seed, engines.names["vision"], recipe.run.weaken.batch_size
        )
    if "inject" in kinds:
        from bpo_data.inject.negatives import InjectedNegatives, RulesRewriter

        if recipe.inject.injector == "rules":
            # Rules take microseconds per unit: large batches keep the write groups full.
            rewriter = RulesRewriter(recipe.seed, recipe.inject.validation, cooccurrence)
            makers["inject"] = InjectedNegatives(rewriter, "rules", max(recipe.run.inject.batch_size, 256))
        else:
            from bpo_data.inject.llm import LLMRewriter

            rewriter = LLMRewriter(engines.text, recipe.inject, recipe.seed)
            makers["inject"] = InjectedNegatives(
                rewriter, engines.names["text"], recipe.run.inject.batch_size
            )
    return makers


def engines_for(recipe: Recipe, kinds: set[str]) -> Engines:
    """The engines ``kinds`` need; any failure to build them is a ``ModelLoadError`` naming the model."""
    from bpo_data.engines.build import build_engines

    for name, flag in ((recipe.model, "--model"), (recipe.inject.model, "--inject-model")):
        if name and name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
            raise ModelLoadError(
                f"{flag} {name}: no such folder; give a llava-hf model id, a folder written by "
                "save_pretrained, or 'smoke'"
            )
    try:
        return build_engines(
            recipe.model,
            recipe.run,
            recipe.seed,
            vision="weaken" in kinds,
            text="inject" in kinds and recipe.inject.injector == "llm",
            text_model=recipe.inject.model,
        )
    except Exception as err:  # noqa: BLE001 - any failure here is one the user must act on
        wanted = recipe.model if "weaken" in kinds or recipe.inject.model is None else recipe.inject.model
        raise ModelLoadError(
            f"cannot start the engines for {sorted(kinds)} with model {wanted!r}: "
            f"{type(err).__name__}: {str(err).strip().rstrip('.')[:500]}. Check --model (a llava-hf id, "
            "a folder written by save_pretrained, or 'smoke'), --inject-model and --base-url"
        ) from err


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit as Ctrl-C raises KeyboardInterrupt, so the store syncs,
    releases its lock and removes its pid file (a scheduler's stop is then as clean as Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_shard(recipe: Recipe, options: GenerateOptions, progress: ProgressHook | None = None) -> RunSummary:
    """Make (or finish) one shard's pairs; see the module docstring for the steps."""
    started = time.perf_counter()
    out_dir = Path(options.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenerateError(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    specs = selected_sources(recipe, options.sources)
    read = source_reader(recipe, options.paths)
    kinds = recipe.negative_kinds([s.name for s in specs])
    summary = RunSummary(shard=f"{options.shard_index}/{options.num_shards}")
    sources = source_records(specs, options.paths)
    after_negatives = verify_and_filter_steps(recipe)
    _check_model(recipe, kinds)
    check_manifest(out_dir, recipe, sources)
    engines: Engines | None = None
    plan: Plan | None = None

    def makers() -> dict[str, NegativeMaker]:
        nonlocal engines
        loading = time.perf_counter()
        engines = engines_for(recipe, kinds)
        summary.models_loaded = True
        built = build_makers(recipe, kinds, engines, plan.cooccurrence if plan else None)
        summary.load_s += time.perf_counter() - loading
        write_manifest(out_dir, recipe, options.recipe_path, [m.generator for m in built.values()], sources)
        return built

    basis = plan_basis(recipe, specs, sources, options.shard_index, options.num_shards)
    with _sigterm_unwinds(), ShardStore(out_dir, options.shard_index, options.num_shards) as store:
        write_manifest(out_dir, recipe, options.recipe_path, [], sources)
        summary.torn_bytes_repaired = store.torn_bytes
        previous = finished_plan(store.read_plan(), basis, out_dir)
        if previous is not None:  # finished, and nothing changed since: no source or shard file is read
            store.write_plan({**previous, **_run_record(store)})
            summary.units_read = previous["units_read"]
            summary.units_seen = previous["units_planned"]
            summary.pairs_planned = summary.already_done = previous["pairs_planned"]
            summary.empty_sources = previous["empty_sources"]
            summary.elapsed_s = time.perf_counter() - started
            store.write_summary(summary.to_dict())
            return summary
        done = store.done_keys()
        rules = "inject" in kinds and recipe.inject.injector == "rules"
        plan = make_plan(recipe, specs, read, options.shard_index, options.num_shards, count_objects=rules)
        keys = plan.pair_keys()
        summary.units_read = plan.units_read
        summary.empty_sources = [name for name, count in plan.units_by_source.items() if count == 0]
        summary.pairs_planned = len(keys)
        summary.already_done = sum(key in done for key in keys)
        record = _plan_record(summary, keys, store, basis, len(plan.chosen))
        store.write_plan(record)
        if progress:
            progress(0, summary.pairs_planned - summary.already_done)
        sample = Sample(plan.chosen)
        writer = Write(
            store, done, strict=options.strict, progress=(lambda n: progress(n, -1)) if progress else None
        )
        from bpo_data.pipeline.make import MakeNegatives

        steps: list[Step] = [
            ReadUnits(specs, read),
            Shard(options.shard_index, options.num_shards),
            sample,
            SkipDone(done),
            LoadImages(
                recipe.images.max_pixels,
                needs_pixels,
                max_aspect_ratio=recipe.images.max_aspect_ratio,
                trusted=recipe.run.trust_image_dirs,
            ),
            MakeNegatives(makers),
            *after_negatives,
            *options.steps,
            writer,
        ]
        finished = summary.already_done == summary.pairs_planned
        try:
            if not finished:  # a finished shard's rerun reads its sources once, to plan, not twice
                run_steps(steps)
        finally:
            if engines is not None:
                engines.close()
        summary.units_seen = len(plan.chosen) if finished else sample.stats["units"]
        summary.pairs_written = writer.stats["pairs"]
        summary.rejects = Counter({k: v for k, v in writer.stats.items() if k != "pairs"})
        summary.reject_examples = dict(writer.examples)
        summary.steps = {step.name: dict(step.stats) for step in steps}
        if all(key in done for key in keys) and not any(summary.rejects.get(r) for r in RETRYABLE_REASONS):
            store.sync()
            store.write_plan({**record, "finished_with": shard_files_stamp(out_dir)})
        summary.elapsed_s = time.perf_counter() - started
        store.write_summary(summary.to_dict())
    return summary


def verify_and_filter_steps(recipe: Recipe) -> list[Step]:
    """The recipe's ``verify:`` step (when set) and then its filters, in the recipe's order.

    Checked before any work: a recipe that scores with CLIP needs open-clip-torch installed.
    """
    steps: list[Step] = []
    if recipe.verify is not None:  # without it the recipe refuses evidence thresholds
        from bpo_data.verify.filters import EvidenceFilter, needs_evidence
        from bpo_data.verify.step import Verify

        steps.append(Verify(_clip_loader(recipe), recipe.run.verify.batch_size, recipe.images.max_pixels))
    for spec in recipe.filters:
        if ThresholdFilter.own_thresholds(spec):
            steps.append(ThresholdFilter(spec))
        if recipe.verify is not None and needs_evidence(spec):
            steps.append(EvidenceFilter(spec))
    return steps


def _check_model(recipe: Recipe, kinds: set[str]) -> None:
    """Before anything is written: the MLLM must be loadable here if a model will run (rules need none)."""
    engines = {recipe.run.weaken.engine} if "weaken" in kinds else set()
    if "inject" in kinds and recipe.inject.injector == "llm":
        engines.add(recipe.run.inject.engine)
    if engines & {"hf", "vllm"}:
        from bpo_data.models import check_model

        check_model(recipe.model)


def _clip_loader(recipe: Recipe):
    verify = recipe.verify
    if verify is None or verify.clip_model is None:
        return None
    if importlib.util.find_spec("open_clip") is None:
        raise GenerateError(
            f"the recipe's verify.clip_model {verify.clip_model!r} needs open-clip-torch: "
            "pip install 'bpo-data[verify]' (or set verify.clip_model to null to measure objects only)"
        )

    def load():
        from bpo_data.verify.clip import load_scorer

        return load_scorer(verify.clip_model, verify.clip_pretrained, recipe.run.verify.device)

    return load


def _run_record(store: ShardStore) -> dict:
    """Who runs the shard, and from when and which line, so ``bpo-data status`` measures this run's speed."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.time(),
        "pair_lines_at_start": count_lines(store.files.pairs),
    }


def _plan_record(summary: RunSummary, keys: list[str], store: ShardStore, basis: str, units: int) -> dict:
    """This run's pair keys and start, so ``bpo-data status`` counts progress exactly while it runs, and
    what a rerun needs to trust the plan without making it again (``bpo_data.plan``)."""
    return {
        "shard": summary.shard,
        **_run_record(store),
        "basis": basis,
        "units_read": summary.units_read,
        "units_planned": units,
        "empty_sources": summary.empty_sources,
        "pairs_planned": len(keys),
        "already_done": summary.already_done,
        "pair_keys": keys,
    }


def generate(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] = (0, 1),
    sources: list[str] | None = None,
    paths: dict[str, SourcePaths] | None = None,
    strict: bool = False,
    steps: Sequence[Step] = (),
    recipe_path: str = "",
    progress: ProgressHook | None = None,
) -> RunSummary:
    """Make shard ``shard`` = (i, N) of ``recipe`` into ``out_dir``; call it again to resume.

    ``paths`` gives sources' files on this machine by source name; ``steps`` adds filter steps
    (``bpo_data.pipeline.Filter``) after the recipe's own.
    """
    options = GenerateOptions(
        out_dir=Path(out_dir),
        shard_index=shard[0],
        num_shards=shard[1],
        sources=sources,
        paths=paths or {},
        strict=strict,
        recipe_path=recipe_path,
        steps=steps,
    )
    return run_shard(recipe, options, progress)
