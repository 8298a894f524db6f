"""The paper's claim in miniature: BPO on the miniature world, end to end with the project's own machinery.

``bpo-train world-repro --out DIR`` runs, on CPU, what the paper ran on 8 A40s, in this order:

1. **world** — ``bpo_data.world.make_world`` (or ``--world``): training scenes with a language prior,
   held-out ``eval_clean`` / ``eval_violating`` scenes and an Object-HalBench-style set.
2. **pairs** — ``bpo_data.generate.generate`` on the training split's three sources, with two recipes
   that differ only in the noise step: *weakened* (image weakening at ``noise_step`` + error injection)
   and *self* (noise step 0: the model's own answers on the clean image, the "self-generated" ablation).
   Injection uses the ``rules`` rewriter: the world model's language model was never trained on rewrite
   instructions, so asking it to rewrite would measure nothing. Like the LLM prompt, the rules add objects
   that usually appear (counted in each training source's own answers: dogs with balls) besides
   changing objects, colours, counts, positions and sign text. The weakened recipe also runs the
   ``verify`` step (claims and objects always; CLIP scores with the world verifier when
   ``bpo-data[verify]`` is installed), so the same pairs are exported twice: as made, and through the
   default evidence filters (*filtered*). Then ``bpo_data.export.export_dataset``.
3. **training** — ``trainer_min.dpo`` / ``trainer_min.sft`` (stock TRL, LoRA), parsed from the same
   flags ``bpo-train dpo|sft`` take: BPO, the SFT baseline on the chosen answers, weaken-only,
   inject-only, self-generated (weaken-only pairs at step 0), BPO on the filtered pairs, and BPO / SFT
   on 25 % and 50 % of the pairs (Figure 8). Every run trains the same number of epochs, so a run on
   fewer pairs takes fewer steps, as in the paper's data-size sweep.
4. **evaluation** — every adapter and the base model: ``bpo_data.world.evaluate`` (CHAIRs / CHAIRi /
   recall of descriptions against the scene graphs, QA accuracy as the helpfulness proxy, the prior)
   on 1,000 scenes of each of ``eval_clean`` and ``eval_violating``, and ``trainer_min.eval`` Object
   HalBench (rules extraction) on the world's ``objhal`` set.
5. **report** — ``report.md`` shaped like the paper's Tables 2, 3 and 4, Figure 7 (``bpo-train plot``)
   and Figure 8, the commands, seeds and versions; ``results.json`` with every number. Every run is
   reported, including ones where BPO does not win; the target lines say plainly whether it was met.

A rerun into the same ``--out`` skips what is finished (pairs, datasets, trained runs, evaluations).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bpo_data.verify.clip import WORLD as WORLD_VERIFIER
from bpo_data.versions import installed
from bpo_data.world.evaluate import FIRST_MENTIONS
from bpo_data.world.params import HELD_OUT_SCENES
from trainer_min.training import PACKAGES

SOURCE_SHARES = {"sharegptv": 0.5, "llava-instruct": 0.25, "llavar": 0.25}  # descriptions carry CHAIR
FRACTIONS = (0.25, 0.5, 1.0)
WEAKENED, SELF, FILTERED = "weakened", "self", "filtered"
MORE_INJECTED = "more-injected"  # pairs of the units past ``units``: an injected negative only
RESULTS_FILE, REPORT_FILE, METRICS_FILE = "results.json", "report.md", "metrics.json"
TRAINED_WITH_FILE = "world_repro_flags.json"  # a run's bpo-train flags: a rerun with other flags trains again
BASE = "base"


@dataclass(frozen=True)
class ReproSettings:
    """What one reproduction runs; the defaults take ~29 minutes on 2 idle cores (``--quick``: ~1.5).

    Defaults measured against 240 units / 40 steps / lr 5e-4 (a QA loss of 14 points with BPO): half
    the learning rate on twice the pairs kept QA within 5 points for the same drop in CHAIRi. Then, on
    the shipped model at step 800, three seeds each, 200 held-out scenes: 80 steps (0.8 epoch) lowered
    violating CHAIRi by 10 %, 160 by 18 %. More of the world's data at the same 1.6 epochs, on the scenes
    that choose (200-399): 480 units lowered it by 17 %, 960 by 28 %, 1,440 by 35 % with QA within a
    point. On the reported scenes 0-199 (five seeds) 1,440 units gave 24 % against 22 % at 480, and on
    Object HalBench 29.8 % against 17.9 %. Then 1,440 more units with an injected negative only (rules:
    no model) at 720 steps, still 1.6 epochs, five seeds against 480 steps without them: 41 % against 34 %
    on 200-399, 34 % against 29 % on the 600 scenes nobody chose on (400-999), 27 % against 24 % on
    0-199, QA 0.6-0.7 points lower on each. Measured on 1,000 held-out scenes per split (the same
    models): 34 % on 0-999, 37 % on 1000-1999, scenes nothing had been measured on, QA 1.5 and 1.8 points
    lower.
    """

    scenes: int | None = None  # training scenes when the world is made here; None: as the model's world
    world_seed: int | None = None  # None: the seed of the world the model was trained on
    # Scenes in each held-out split (at most as many as the world holds). On 100 of them BPO's drop in
    # violating CHAIRi was -27 % on scenes 0-99 and -10 % on 100-199; on 200 the 95 % interval of the
    # drop was 30 points wide (11 to 41 %), so 200 could not tell a -25 % from a -35 %.
    eval_scenes: int = HELD_OUT_SCENES
    objhal_scenes: int = 300  # all the world makes: Object HalBench is the paper's first table
    units: int = 1440  # training units sampled for pairs; each gets a weakened and an injected negative
    # More units with an injected negative only (rules: no model, seconds); None: as many as ``units``, so
    # a smaller or larger ``units`` keeps the shipped mix. Sampling is nested, so they are the next units
    # of the same sample; the first ``units`` keep both negatives.
    inject_units: int | None = None
    steps: int = 720  # optimizer steps of the full BPO run (1.6 epochs); every run trains the same epochs
    batch_size: int = 8
    learning_rate: float = 2e-4  # the paper's 2e-6 moves a 2 M-parameter model nowhere in 480 steps
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    # Where this model's prior speaks, read off Figure 5 in miniature (the absent partner named in 25.2 % of
    # clean descriptions, 30.1 % at the paper's 500, 58.3 % at 800), as the paper read 500 off its own for
    # LLaVA-1.5. Three seeds: BPO moved violating CHAIRi by -2 % at 500, by -18 % at 800.
    noise_step: int = 800
    noise_space: str = "pixel"
    max_new_tokens: int = 128
    seed: int = 0  # pairs and training
    verify: bool = True  # evidence for the weakened pairs, and BPO on the pairs the default filters keep
    threads: int = (
        1  # torch threads: decoding a 5 M model is overhead-bound, and 2 threads thrash on a busy CPU
    )
    jobs: int = 1  # runs trained and evaluated side by side, each in a process of its own with `threads`

    @classmethod
    def quick(cls) -> ReproSettings:
        return cls(eval_scenes=24, objhal_scenes=16, units=48, steps=9)

    def injected_only_units(self) -> int:
        """How many units past ``units`` get an injected negative only."""
        return self.units if self.inject_units is None else self.inject_units


@dataclass(frozen=True)
class Variant:
    """One trained model: objective, which pairs, which share of them."""

    name: str
    objective: str  # dpo | sft
    pairs: str  # WEAKENED | SELF
    negative_types: tuple[str, ...] = ()
    fraction: float = 1.0
    about: str = ""


VARIANTS: tuple[Variant, ...] = (
    Variant("bpo", "dpo", WEAKENED, about="BPO: weakened + injected negatives"),
    Variant("sft", "sft", WEAKENED, about="SFT baseline on the chosen answers"),
    Variant("weaken-only", "dpo", WEAKENED, ("weaken",), about="image-weakened negatives only"),
    Variant("inject-only", "dpo", WEAKENED, ("inject",), about="error-injected negatives only"),
    Variant("self-generated", "dpo", SELF, ("weaken",), about="the model's own clean answers (noise step 0)"),
    Variant("bpo-filtered", "dpo", FILTERED, about="BPO on the pairs the default evidence filters keep"),
    Variant("bpo-25", "dpo", WEAKENED, fraction=0.25, about="BPO on 25 % of the pairs"),
    Variant("bpo-50", "dpo", WEAKENED, fraction=0.5, about="BPO on 50 % of the pairs"),
    Variant("sft-25", "sft", WEAKENED, fraction=0.25, about="SFT on 25 % of the pairs"),
    Variant("sft-50", "sft", WEAKENED, fraction=0.5, about="SFT on 50 % of the pairs"),
)


@dataclass
class Clock:
    """Wall and CPU time per stage (CPU time says what a busy machine's wall time hides)."""

    started: float = field(default_factory=time.time)
    cpu_started: float = field(default_factory=time.process_time)
    stages: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    children_cpu: float = 0.0  # CPU seconds of runs done in worker processes (``--jobs``)

    def elapsed(self) -> str:
        seconds = int(time.time() - self.started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"


def reproduce(
    out: str | Path,
    model_dir: str | Path,
    settings: ReproSettings = ReproSettings(),
    world: str | Path | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the five stages of the module docstring into ``out``; return what ``results.json`` holds."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _reproduce(Path(out), Path(model_dir), settings, world, variants, log)
    finally:
        torch.set_num_threads(previous)


def _reproduce(
    out: Path,
    model_dir: Path,
    settings: ReproSettings,
    world: str | Path | None,
    variants: tuple[Variant, ...],
    log: Callable[[str], None],
) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock()

    def say(message: str) -> None:
        log(f"[{clock.elapsed()}] {message}")

    def stage(name: str, run: Callable[[], Any]) -> Any:
        result, (clock.stages[name], clock.cpu[name]) = _timed(run)
        return result

    world_dir = Path(world) if world is not None else out / "world"
    made_here = world is None
    record = stage("world", lambda: _world(world_dir, model_dir, settings, made_here, say))
    settings = _measured_on_what_it_holds(settings, record, world_dir, say)
    datasets = stage("pairs", lambda: _pairs(out, world_dir, str(model_dir), settings, say))
    epochs = settings.steps * settings.batch_size / datasets[WEAKENED]["rows"]
    say(
        f"every run trains {epochs:.2f} epochs "
        f"({settings.steps} steps on all {datasets[WEAKENED]['rows']} pairs)"
    )
    trained = []
    for variant in variants:
        if datasets.get(variant.pairs, {}).get("rows"):
            trained.append(variant)
        else:
            say(f"train {variant.name}: skipped, it has no pairs (see the pairs stage above)")
    inputs = RunInputs(out, datasets, str(model_dir), world_dir, settings, epochs)
    done = _runs((None, *trained), inputs, clock, say)
    runs = {name: run for name, (run, _, _) in done.items() if run is not None}
    metrics = {name: measured for name, (_, measured, _) in done.items()}
    for times in (times for _, _, times in done.values()):
        for name, (wall, cpu) in times.items():
            clock.stages[name], clock.cpu[name] = wall, cpu
    results = {
        "settings": {**asdict(settings), "inject_units": settings.injected_only_units()},
        "model": str(model_dir),
        "world": str(world_dir),
        "world_record": record,
        "datasets": datasets,
        "epochs": epochs,
        "runs": runs,
        "metrics": metrics,
        "timings_s": {k: round(v, 1) for k, v in clock.stages.items()},
        "cpu_s": {k: round(v, 1) for k, v in clock.cpu.items()},
        "total_s": round(time.time() - clock.started, 1),
        "total_cpu_s": round(time.process_time() - clock.cpu_started + clock.children_cpu, 1),
        "versions": installed(PACKAGES),
    }
    results["target"] = target_check(metrics)
    figures = _figures(out, runs, metrics)
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    (out / REPORT_FILE).write_text(report_markdown(results, figures), encoding="utf-8")
    say(f"wrote {out / REPORT_FILE} and {out / RESULTS_FILE}")
    return results


RunResult = tuple[dict[str, Any] | None, dict[str, Any], dict[str, tuple[float, float]]]


@dataclass(frozen=True)
class RunInputs:
    """What every training and evaluation of one reproduction shares (sent whole to a worker process)."""

    out: Path
    datasets: dict[str, dict[str, Any]]
    model: str
    world_dir: Path
    settings: ReproSettings
    epochs: float


def _timed(work: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """``work()``'s result and the wall and CPU seconds it took."""
    started, cpu = time.time(), time.process_time()
    result = work()
    return result, (time.time() - started, time.process_time() - cpu)


def _runs(
    variants: tuple[Variant | None, ...], inputs: RunInputs, clock: Clock, say: Callable[[str], None]
) -> dict[str, RunResult]:
    """Train and evaluate each variant (None: evaluate the base model), ``settings.jobs`` at a time.

    Runs are independent, so on a machine with N cores N of them go side by side, each a process of its
    own (spawned: torch's threads and TRL's state stay per run), the longest first. Results come back in
    the order of ``variants`` whatever order they finish in.
    """
    names = [BASE if v is None else v.name for v in variants]
    jobs = inputs.settings.jobs
    if jobs <= 1:
        return {name: _train_and_evaluate(v, inputs, say) for name, v in zip(names, variants)}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    longest_first = sorted(zip(names, variants), key=lambda nv: -_work(nv[1], inputs.datasets))
    say(f"runs: {len(variants)} trainings and evaluations, {jobs} side by side")
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            name: pool.submit(_train_and_evaluate_in_worker, v, inputs, clock.started)
            for name, v in longest_first
        }
        done = {name: futures[name].result() for name in names}
    clock.children_cpu += sum(cpu for _, _, times in done.values() for _, cpu in times.values())
    return done


def _work(variant: Variant | None, datasets: dict[str, dict[str, Any]]) -> float:
    """How much training a run holds (pair rows it reads, DPO counted twice), to start the longest first."""
    if variant is None:
        return 0.0
    rows = datasets[variant.pairs]["rows"] * variant.fraction
    return rows * (2 if variant.objective == "dpo" else 1)


def _train_and_evaluate(variant: Variant | None, inputs: RunInputs, say: Callable[[str], None]) -> RunResult:
    """A variant's training (none for the base model) and evaluation, with each stage's wall and CPU time."""
    out, settings, model = inputs.out, inputs.settings, inputs.model
    times: dict[str, tuple[float, float]] = {}
    run = None
    name = BASE if variant is None else variant.name
    if variant is not None:
        run, times[f"train:{name}"] = _timed(
            lambda: _train(out, variant, inputs.datasets, model, settings, inputs.epochs, say)
        )
    metrics, times[f"eval:{name}"] = _timed(
        lambda: _evaluate(out / "eval" / name, model, run, inputs.world_dir, name, settings, say)
    )
    return run, metrics, times


def _train_and_evaluate_in_worker(variant: Variant | None, inputs: RunInputs, started: float) -> RunResult:
    """``_train_and_evaluate`` in a worker process: its own torch threads, progress on stderr."""
    import sys

    import torch

    torch.set_num_threads(inputs.settings.threads)
    clock = Clock(started=started)

    def say(message: str) -> None:
        print(f"[{clock.elapsed()}] {message}", file=sys.stderr, flush=True)

    return _train_and_evaluate(variant, inputs, say)


# --- 1. the world ---------------------------------------------------------------------------------


def _world(
    world_dir: Path, model_dir: Path, settings: ReproSettings, made_here: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    """Use ``--world``, or make the world the model was trained on (same seed and training scenes); return
    what its ``world.json`` records.

    The held-out splits avoid the training scenes of the world they are made with, so a world made with
    other training scenes could hold out scenes the model saw; the model's own world cannot.
    """
    if (world_dir / "world.json").is_file():
        say(f"world: using {world_dir}")
    else:
        _make_world(world_dir, model_dir, settings, made_here, say)
    return json.loads((world_dir / "world.json").read_text("utf-8"))


def _measured_on_what_it_holds(
    settings: ReproSettings, record: dict[str, Any], world_dir: Path, say: Callable[[str], None]
) -> ReproSettings:
    """The settings with ``eval_scenes`` no more than the world holds per held-out split.

    Every later stage, the saved evaluations' ``measured_on`` and ``results.json`` then hold the number
    really measured on, so a world made again with more scenes is measured again, not read from before.
    """
    held = min(record["splits"][split]["scenes"] for split in ("eval_clean", "eval_violating"))
    if held >= settings.eval_scenes:
        return settings
    say(
        f"world: {world_dir} holds {held} held-out scenes per split, fewer than the {settings.eval_scenes} "
        f"asked; measuring on {held} (on 200 the 95 % interval of BPO's drop in CHAIRi was 30 points "
        f"wide): make the world with `bpo-data world make --eval-scenes {settings.eval_scenes}`"
    )
    return replace(settings, eval_scenes=held)


def _make_world(
    world_dir: Path, model_dir: Path, settings: ReproSettings, made_here: bool, say: Callable[[str], None]
) -> None:
    from bpo_data.world.make import make_world

    if not made_here:
        raise FileNotFoundError(
            f"--world {world_dir} holds no world.json; make one with `bpo-data world make`"
        )
    from bpo_data.world.model import trained_world

    trained_on = trained_world(Path(model_dir))
    scenes = settings.scenes or trained_on.get("scenes")
    seed = settings.world_seed if settings.world_seed is not None else trained_on.get("seed", 0)
    if scenes is None:
        raise ValueError(
            f"{model_dir} does not say which world trained it (no provenance.json); give --scenes or --world"
        )
    say(f"world: making {scenes} training scenes (seed {seed}) in {world_dir}")
    make_world(world_dir, scenes, seed, settings.eval_scenes, settings.objhal_scenes)


# --- 2. the pairs ---------------------------------------------------------------------------------


def recipe_for(
    world_dir: Path,
    model: str,
    settings: ReproSettings,
    noise_step: int,
    negatives,
    verify: bool = False,
    clip: bool = False,
) -> Any:
    """The recipe of the training pairs: the world's three training sources, ``rules`` injection.

    ``verify`` adds the evidence step and no filter (every pair is kept and carries its evidence, so
    the filters can be applied at export); ``clip`` adds CLIP scores by the world verifier to it.
    """
    from bpo_data.recipe import Recipe
    from bpo_data.world.make import source_specs

    sources = []
    for entry in source_specs(world_dir / "train"):
        share = SOURCE_SHARES[entry["format"]]
        sources.append(
            {
                **entry,
                "quota": max(1, round(settings.units * share)),
                "turns": "first",
                "style": "description" if entry["format"] == "sharegptv" else "qa",
                "negatives": negatives,
            }
        )
    return Recipe.model_validate(
        {
            "name": f"world-repro-step{noise_step}",
            "version": "1.0.0",
            "seed": settings.seed,
            "model": model,
            "sources": sources,
            "weaken": {
                "noise": {"step": noise_step, "space": settings.noise_space},
                "sampling": {"temperature": 0.2, "top_p": 1.0, "max_new_tokens": settings.max_new_tokens},
            },
            "inject": {"injector": "rules"},
            "verify": {"clip_model": WORLD_VERIFIER if clip else None, "clip_pretrained": None}
            if verify
            else None,
            "run": {"device": "cpu", "dtype": "float32", "weaken": {"batch_size": 32}},
        }
    )


def _pairs(
    out: Path, world_dir: Path, model: str, settings: ReproSettings, say: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Generate and export the weakened pairs (both negative types), the self-generated ones, and the
    weakened pairs through the default evidence filters."""
    import yaml

    from bpo_data.export import export_dataset
    from bpo_data.generate import generate

    clip = settings.verify and _clip_installed(say)
    plans = {
        WEAKENED: recipe_for(world_dir, model, settings, settings.noise_step, "both", settings.verify, clip),
        SELF: recipe_for(world_dir, model, settings, 0, {"weaken": 1.0}),
    }
    if settings.injected_only_units():
        # The first ``units`` of this larger sample are WEAKENED's own, their injected pairs the same
        # keys: the export keeps WEAKENED's (first key wins), so only the further units add pairs.
        more = replace(settings, units=settings.units + settings.injected_only_units())
        plans[MORE_INJECTED] = recipe_for(
            world_dir, model, more, settings.noise_step, {"inject": 1.0}, settings.verify, clip
        )
    folders = {name: out / "pairs" / name for name in plans}
    summaries = {}
    for name, recipe in plans.items():
        folders[name].mkdir(parents=True, exist_ok=True)
        (folders[name].parent / f"{name}.yaml").write_text(
            yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        units = sum(source.quota or 0 for source in recipe.sources)
        say(f"pairs ({name}): noise step {recipe.weaken.noise.step}, {units} training units")
        summaries[name] = generate(recipe, folders[name], progress=_progress(say, f"pairs ({name})"))
    exported_from = {WEAKENED: _weakened_folders(folders), SELF: [folders[SELF]]}
    made = {}
    for name, generated in exported_from.items():
        exported, summary = out / "datasets" / name, summaries[name]
        stats = export_dataset(generated, exported, version=plans[name].version)
        made[name] = _dataset(exported, stats, plans[name], stats.generation_rejects)
        say(
            f"pairs ({name}): {summary.pairs_written} new, {stats.pairs} exported, "
            f"rejects {dict(summary.rejects)}"
        )
    if settings.verify:
        made[FILTERED] = _filtered(out, plans[WEAKENED], exported_from[WEAKENED], say)
    return made


def _weakened_folders(folders: dict[str, Path]) -> list[Path]:
    """What BPO trains on: the weakened pairs, then the injected-only ones of the further units."""
    return [folders[WEAKENED], *([folders[MORE_INJECTED]] if MORE_INJECTED in folders else [])]


def _clip_installed(say: Callable[[str], None]) -> bool:
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:
        say(
            "pairs: evidence without CLIP scores (the world verifier needs open-clip-torch: pip install "
            "'bpo-data[verify]'); the default filter reads claims, which need no CLIP"
        )
        return False
    return True


def _filtered(out: Path, recipe: Any, generated: list[Path], say: Callable[[str], None]) -> dict[str, Any]:
    """The weakened pairs exported again through the default evidence filters (``bpo_data.verify``)."""
    from bpo_data.export import export_dataset
    from bpo_data.recipe import FilterSpec
    from bpo_data.verify.filters import DEFAULT_FILTERS

    filters = [FilterSpec.model_validate(f) for f in DEFAULT_FILTERS]
    exported = out / "datasets" / FILTERED
    stats = export_dataset(generated, exported, version=recipe.version, filters=filters)
    say(f"pairs ({FILTERED}): {stats.pairs} kept by {list(DEFAULT_FILTERS)}, dropped {dict(stats.filtered)}")
    return {**_dataset(exported, stats, recipe, stats.filtered), "filters": list(DEFAULT_FILTERS)}


def _progress(say: Callable[[str], None], label: str) -> Callable[[int, int], None]:
    state = {"done": 0, "total": 0, "shown": -1}

    def hook(advance: int, total: int) -> None:
        if total >= 0:
            state["total"] = total
        state["done"] += advance
        quarter = 4 * state["done"] // max(state["total"], 1)
        if quarter != state["shown"]:
            state["shown"] = quarter
            say(f"{label}: {state['done']}/{state['total']} pairs")

    return hook


def _dataset(exported: Path, stats: Any, recipe: Any, rejects: dict[str, int]) -> dict[str, Any]:
    """What the report says of an exported dataset, from the export's own stats (no second read)."""
    by_type: dict[str, int] = {}
    for per_type in stats.counts.values():
        for kind, count in per_type.items():
            by_type[kind] = by_type.get(kind, 0) + count
    return {
        "dir": str(exported),
        "rows": stats.pairs,
        "by_type": by_type,
        "rejects": dict(rejects),
        "noise_step": recipe.weaken.noise.step,
    }


# --- 3. training ----------------------------------------------------------------------------------


def training_argv(
    variant: Variant,
    dataset: dict[str, Any],
    model: str,
    run_dir: Path,
    settings: ReproSettings,
    epochs: float,
) -> list[str]:
    """The ``bpo-train dpo|sft`` flags of one run (the report prints them as commands)."""
    argv = [
        "--dataset", dataset["dir"],
        "--model_name_or_path", model,
        "--output_dir", str(run_dir),
        "--num_train_epochs", f"{epochs:.6g}",
        "--per_device_train_batch_size", str(settings.batch_size),
        "--learning_rate", str(settings.learning_rate),
        "--lora_r", str(settings.lora_r),
        "--lora_alpha", str(settings.lora_alpha),
        "--warmup_steps", "0.1",
        "--seed", str(settings.seed),
        "--data_seed", str(settings.seed),
        "--save_strategy", "no",
        "--disable_tqdm", "true",
        "--dtype", "float32",
    ]  # fmt: skip
    if variant.objective == "dpo":
        argv += ["--beta", str(settings.beta)]
    if variant.negative_types:
        argv += ["--negative_types", ",".join(variant.negative_types)]
    if variant.fraction < 1.0:
        argv += ["--max_samples", str(max(1, round(dataset["rows"] * variant.fraction)))]
    return argv


def _train(
    out: Path,
    variant: Variant,
    datasets: dict[str, dict[str, Any]],
    model: str,
    settings: ReproSettings,
    epochs: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    run_dir = out / "runs" / variant.name
    argv = training_argv(variant, datasets[variant.pairs], model, run_dir, settings, epochs)
    record, made_with = run_dir / "training_config.json", run_dir / TRAINED_WITH_FILE
    # the flags with this reproduction's folder left out, so that a copied or moved folder still matches
    flags = [a.replace(str(out), "<out>") for a in argv]
    finished = record.is_file() and "finished_at" in json.loads(record.read_text("utf-8"))
    if finished and made_with.is_file() and json.loads(made_with.read_text("utf-8")) == flags:
        say(f"train {variant.name}: already trained in {run_dir}")
    else:
        if finished:  # bpo-train refuses a folder holding a finished run: keep it beside the new one
            kept = run_dir.with_name(f"{run_dir.name}.before-{time.strftime('%Y%m%dT%H%M%S')}")
            run_dir.rename(kept)
            say(f"train {variant.name}: {run_dir} was trained with other flags (now {kept}); training again")
        elif record.is_file():  # stopped before its end (killed, preempted): it saved no adapter to keep
            say(f"train {variant.name}: {run_dir} did not finish; training it again")
        _fit(variant, argv, say)
        made_with.write_text(json.dumps(flags) + "\n", encoding="utf-8")
    done = json.loads(record.read_text("utf-8"))
    return {
        "dir": str(run_dir),
        "objective": variant.objective,
        "about": variant.about,
        "pairs": variant.pairs,
        "fraction": variant.fraction,
        "negative_types": list(variant.negative_types),
        "command": f"bpo-train {variant.objective} " + " ".join(argv),
        "rows": done["data"]["rows"],
        "steps": done["global_step"],
        "train_loss": done["train_loss"],
        "finished_at": done["finished_at"],
    }


def _fit(variant: Variant, argv: list[str], say: Callable[[str], None]) -> None:
    """Parse the flags with the objective's own TRL parser and train, printing progress every few steps."""
    from transformers import PrinterCallback, TrainerCallback

    from trainer_min import dpo, sft, training

    module = dpo if variant.objective == "dpo" else sft
    parsed = module.make_parser(f"bpo-train {variant.objective}").parse(argv)

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            every = max(1, state.max_steps // 4)
            if logs and "loss" in logs and (state.global_step % every == 0 or state.global_step == 1):
                shown = {
                    k: round(float(v), 3) for k, v in logs.items() if k in ("loss", "rewards/accuracies")
                }
                say(f"train {variant.name}: step {state.global_step}/{state.max_steps} {shown}")

    run = module.build(*parsed, callbacks=[Progress()])
    run.trainer.remove_callback(PrinterCallback)
    say(f"train {variant.name}: {len(run.trainer.train_dataset)} rows, {variant.about}")
    training.train(run)


# --- 4. evaluation --------------------------------------------------------------------------------


def _evaluate(
    eval_dir: Path,
    model: str,
    run: dict[str, Any] | None,
    world_dir: Path,
    name: str,
    settings: ReproSettings,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """World metrics (held-out splits) and Object HalBench (rules) of the base model or a run's adapter on
    it; measured again when the scenes asked for or the run (trained again) differ from the saved ones."""
    saved = eval_dir / METRICS_FILE
    adapter = None if run is None else run["dir"]
    measured_on = {
        "eval_scenes": settings.eval_scenes,
        "objhal_scenes": settings.objhal_scenes,
        "run_finished_at": None if run is None else run["finished_at"],
    }
    if saved.is_file():
        metrics = json.loads(saved.read_text("utf-8"))
        if metrics.get("measured_on") == measured_on:
            say(f"eval {name}: already measured in {eval_dir}")
            return metrics
        say(f"eval {name}: measured before on other scenes or another training of the run; measuring again")
    from bpo_data.world.evaluate import DESCRIPTION_TOKENS
    from trainer_min.eval.answer import GenerationSettings
    from trainer_min.eval.run import EvalOptions, run_eval

    say(f"eval {name}: held-out descriptions and questions")
    world = world_metrics(
        model, adapter, world_dir, settings.eval_scenes, out_dir=eval_dir / "answers", log=lambda m: None
    )
    say(f"eval {name}: Object HalBench (rules extraction) on {world_dir / 'objhal'}")
    objhal = run_eval(
        EvalOptions(
            benchmarks=["objhal"],
            data=world_dir / "objhal",
            out=eval_dir / "objhal",
            model=model,
            adapter=adapter,
            extract="rules",
            generation=GenerationSettings(max_new_tokens=DESCRIPTION_TOKENS, batch_size=32),
            device="cpu",
            limit=settings.objhal_scenes,
        )
    )["objhal"]["metrics"]
    world.pop("examples", None)
    metrics = {
        "world": world,
        "objhal": {k: objhal[k] for k in ("chair_s", "obj", "recall", "items")},
        "measured_on": measured_on,
    }
    eval_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    v, q = world["eval_violating"], world["eval_clean"]["qa"]["all"]
    say(f"eval {name}: violating CHAIRi {_num(v['chair']['chair_i'])}  clean QA {_num(q)}")
    return metrics


# --- 5. the report --------------------------------------------------------------------------------


def world_metrics(
    model: str,
    adapter: str | None,
    world_dir: Path,
    limit: int | None = None,
    skip: int = 0,
    out_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``bpo_data.world.evaluate``'s metrics of the base model, or of a LoRA run on it, on held-out scenes
    (what each reproduction run is measured with, and ``bpo-train world-eval``)."""
    from bpo_data.engines.hf import HFVisionEngine
    from bpo_data.world.evaluate import evaluate_world_model
    from trainer_min.eval.answer import load_runtime

    engine = HFVisionEngine(load_runtime(model, adapter, device="cpu"))
    try:
        return evaluate_world_model(
            model, world_dir, limit=limit, skip=skip, out_dir=out_dir, engine=engine, log=log
        )
    finally:
        engine.close()


def _get(metrics: dict[str, Any], *path: str) -> float | None:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def qa_mean(metrics: dict[str, Any]) -> float | None:
    """Helpfulness: QA accuracy, the mean of the two held-out splits."""
    values = [_get(metrics, "world", split, "qa", "all") for split in ("eval_clean", "eval_violating")]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def violating_chair_i(metrics: dict[str, Any]) -> float | None:
    return _violating(metrics, "chair_i")


def _violating(metrics: dict[str, Any], key: str) -> float | None:
    return _get(metrics, "world", "eval_violating", "chair", key)


def chair_i_error(first: dict[str, Any], second: dict[str, Any]) -> float | None:
    """Standard error (points) of the gap in violating CHAIRi between two models on the same scenes.

    Scenes, not mentions, are the samples: a scene that draws out the prior draws it out in both models,
    and one description's mentions err together, so a binomial error over mentions is too small (with
    100 scenes per split a -27 % gap on scenes 0-99 was -10 % on scenes 100-199). CHAIRi is a ratio of
    sums; the delta method gives each scene's share of the gap, (h - CHAIRi m) / mean m for each model,
    and the error is their spread over the square root of the number of scenes.
    """
    counts = [_violating(m, "per_description") for m in (first, second)]
    if not all(counts) or len(counts[0]) != len(counts[1]) or len(counts[0]) < 2:
        return None
    shares = []
    for rows in counts:  # [mentions, hallucinated] per description
        mentions = sum(m for m, _ in rows)
        if not mentions:
            return None
        ratio, mean = sum(h for _, h in rows) / mentions, mentions / len(rows)
        shares.append([(h - ratio * m) / mean for m, h in rows])
    gaps = [a - b for a, b in zip(*shares)]
    n = len(gaps)
    return math.sqrt(sum(g * g for g in gaps) / (n - 1) / n) * 100


COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("ObjHal CHAIRs", lambda m: _get(m, "objhal", "chair_s")),
    ("ObjHal CHAIRi", lambda m: _get(m, "objhal", "obj")),
    ("violating CHAIRs", lambda m: _get(m, "world", "eval_violating", "chair", "chair_s")),
    ("violating CHAIRi", violating_chair_i),
    (f"violating CHAIRi, first {FIRST_MENTIONS} mentions", lambda m: _violating(m, "chair_i_first")),
    ("violating recall", lambda m: _violating(m, "recall")),
    ("clean CHAIRi", lambda m: _get(m, "world", "eval_clean", "chair", "chair_i")),
    ("absent partner named", lambda m: _get(m, "world", "prior", "partner_named_violating")),
    ("QA clean", lambda m: _get(m, "world", "eval_clean", "qa", "all")),
    ("QA violating", lambda m: _get(m, "world", "eval_violating", "qa", "all")),
)


def _num(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _change(drop: float | None) -> str:
    """A relative drop as a person reads it: "12.0 % lower" or "27.6 % higher"."""
    if drop is None:
        return "n/a"
    return f"{_num(abs(drop))} % {'lower' if drop >= 0 else 'higher'}"


def _relative_drop(base: float | None, value: float | None) -> float | None:
    if base is None or value is None or base == 0:
        return None
    return (base - value) / base * 100


def target_check(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's direction, in miniature, each claim with its measured numbers and whether it held."""
    base = metrics.get(BASE, {})
    checks = []

    def claim(text: str, held: bool | None, measured: str) -> None:
        checks.append({"claim": text, "met": held, "measured": measured})

    runs = {name: metrics.get(name, {}) for name in ("bpo", "sft", "weaken-only", "self-generated")}
    b, bpo, sft = violating_chair_i(base), violating_chair_i(runs["bpo"]), None
    if "sft" in metrics:
        sft = violating_chair_i(metrics["sft"])
    drop_bpo, drop_sft = _relative_drop(b, bpo), _relative_drop(b, sft)
    claim(
        "BPO lowers CHAIRi on prior-violating scenes by >= 30 % relative to the base model",
        None if drop_bpo is None else drop_bpo >= 30,
        f"base {_num(b)} -> BPO {_num(bpo)} ({_change(drop_bpo)}; standard error of the gap "
        f"{_num(chair_i_error(base, runs['bpo']))} points; over the first {FIRST_MENTIONS} mentions of "
        f"each description, which shortening alone barely moves: {_num(_violating(base, 'chair_i_first'))} "
        f"-> {_num(_violating(runs['bpo'], 'chair_i_first'))}; recall "
        f"{_num(_violating(base, 'recall'))} -> {_num(_violating(runs['bpo'], 'recall'))})",
    )
    claim(
        "... and more than SFT does",
        None if drop_bpo is None or drop_sft is None else drop_bpo > drop_sft,
        f"BPO {_change(drop_bpo)}, SFT {_change(drop_sft)} (SFT {_num(sft)}; "
        f"standard error of the BPO-SFT gap {_num(chair_i_error(runs['bpo'], runs['sft']))} points)",
    )
    qa_base, qa_bpo = qa_mean(base), qa_mean(metrics.get("bpo", {}))
    claim(
        "BPO keeps QA accuracy within 2 points of the base model",
        None if qa_base is None or qa_bpo is None else qa_bpo >= qa_base - 2,
        f"base {_num(qa_base)}, BPO {_num(qa_bpo)}",
    )
    weak, own = (
        violating_chair_i(metrics.get("weaken-only", {})),
        violating_chair_i(metrics.get("self-generated", {})),
    )
    claim(
        "weakened negatives beat self-generated ones (lower CHAIRi on prior-violating scenes)",
        None if weak is None or own is None else weak < own,
        f"weakened {_num(weak)}, self-generated {_num(own)} (standard error of the gap "
        f"{_num(chair_i_error(runs['weaken-only'], runs['self-generated']))} points)",
    )
    filtered = metrics.get("bpo-filtered", {})
    kept = violating_chair_i(filtered)
    claim(
        "BPO on the evidence-filtered pairs does at least as well as on all of them (violating CHAIRi)",
        None if kept is None or bpo is None else kept <= bpo,
        f"all pairs {_num(bpo)}, filtered {_num(kept)} (QA {_num(qa_bpo)} vs {_num(qa_mean(filtered))}; "
        f"standard error of the gap {_num(chair_i_error(runs['bpo'], filtered))} points)"
        if kept is not None
        else "not run (--no-verify)",
    )
    return checks


def _table(names: list[str], runs: dict[str, dict[str, Any]], metrics: dict[str, dict[str, Any]]) -> str:
    header = "| model | pairs | steps | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [header, "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for name in names:
        if name not in metrics:
            continue
        run = runs.get(name, {})
        cells = [_num(get(metrics[name])) for _, get in COLUMNS]
        lines.append(
            f"| {name} | {run.get('rows', '-')} | {run.get('steps', '-')} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def summary_table(results: dict[str, Any]) -> str:
    """Every model in one plain table (what the command prints at the end)."""
    short = (
        "ObjHal CHAIRi",
        "violating CHAIRi",
        "violating recall",
        "clean CHAIRi",
        "QA clean",
        "QA violating",
    )
    picked = [(c, get) for c, get in COLUMNS if c in short]
    lines = [f"{'model':16s}{'steps':>6s}" + "".join(f"{c:>18s}" for c, _ in picked)]
    for name, metrics in results["metrics"].items():
        steps = results["runs"].get(name, {}).get("steps", "-")
        lines.append(f"{name:16s}{steps!s:>6s}" + "".join(f"{_num(get(metrics)):>18s}" for _, get in picked))
    for check in results["target"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        lines.append(f"target: {check['claim']}: {verdict} ({check['measured']})")
    return "\n".join(lines)


def _figures(
    out: Path, runs: dict[str, dict[str, Any]], metrics: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Figure 7 (``bpo-train plot`` of the BPO and SFT runs) and Figure 8 (the data-size sweep)."""
    figures = {}
    curves = [runs[name]["dir"] for name in ("bpo", "sft") if name in runs]
    if curves:
        from trainer_min.plot import plot_runs

        figures["figure7"] = plot_runs(curves, out / "figure7.png").name
    sweep = sweep_rows(metrics)
    if any(len(points) > 1 for points in sweep.values()):
        figures["figure8"] = _plot_sweep(sweep, metrics.get(BASE, {}), out / "figure8.png").name
    return figures


def sweep_rows(metrics: dict[str, dict[str, Any]]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Per objective, (fraction of the pairs, metrics) for the runs of the data-size sweep."""
    sweep: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for objective in ("bpo", "sft"):
        for fraction in FRACTIONS:
            name = objective if fraction == 1.0 else f"{objective}-{round(fraction * 100)}"
            if name in metrics:
                sweep.setdefault(objective, []).append((fraction, metrics[name]))
    return sweep


def _plot_sweep(sweep: dict[str, list], base: dict[str, Any], to: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, (label, get) in zip(
        axes, (("CHAIRi, prior-violating scenes (%)", violating_chair_i), ("QA accuracy (%)", qa_mean))
    ):
        for objective, points in sweep.items():
            axis.plot(
                [f * 100 for f, _ in points],
                [get(m) or 0.0 for _, m in points],
                marker="o",
                label=objective.upper(),
            )
        if get(base) is not None:
            axis.axhline(get(base), color="grey", linestyle="--", label="base")
        axis.set(xlabel="share of the pairs (%)", ylabel=label, xticks=[f * 100 for f in FRACTIONS])
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle("Figure 8 in miniature: BPO vs SFT by data size")
    fig.tight_layout()
    fig.savefig(to, dpi=120)
    plt.close(fig)
    return to


def _more_injected(settings: dict[str, Any]) -> str:
    more = settings.get("inject_units", 0)  # absent from the results of earlier versions
    return f" and {more} more with an injected negative only" if more else ""


def report_markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    runs, metrics, s = results["runs"], results["metrics"], results["settings"]
    world = results["world_record"]
    lines = [
        "# BPO in miniature: the reproduction",
        "",
        f"Model `{results['model']}`, world `{results['world']}` (world seed {world['seed']}, "
        f"version {world['world_version']}). Pairs: {s['units']} training units{_more_injected(s)}, "
        f"image weakening at step {s['noise_step']} ({s['noise_space']} space) + error injection with "
        "the `rules` rewriter, which "
        "also adds the objects each training source's answers usually name together (the world model's "
        "language model was not trained on rewrite examples, so it is not asked to rewrite). "
        f"Training: LoRA r={s['lora_r']} alpha={s['lora_alpha']}, lr {s['learning_rate']}, "
        f"beta {s['beta']}, batch {s['batch_size']}, {results['epochs']:.2f} epochs for every run; "
        f"seed {s['seed']} for pairs and training. Evaluation: greedy, on {s['eval_scenes']} "
        "held-out scenes per split; CHAIR and recall by the CHAIR rules against the scene graphs (the "
        "standard error of a gap between two models is over scenes, paired); Object HalBench with rules "
        f"extraction on {s['objhal_scenes']} of the world's `objhal` scenes; QA accuracy is the "
        "helpfulness proxy.",
        "",
        "## Target (the paper's direction)",
        "",
    ]
    for check in results["target"]:
        verdict = {True: "**met**", False: "**NOT met**", None: "not measured"}[check["met"]]
        lines.append(f"- {check['claim']}: {verdict} — {check['measured']}")
    lines += [
        "",
        "## Table 2 — main result",
        "",
        _table([BASE, "bpo"], runs, metrics),
        "",
        "## Table 3 — ablation of the negatives, and the SFT baseline",
        "",
        _table([BASE, "sft", "weaken-only", "inject-only", "bpo"], runs, metrics),
        "",
        "## Table 4 — image-weakened vs self-generated negatives (weaken-type pairs only)",
        "",
        _table([BASE, "self-generated", "weaken-only"], runs, metrics),
        "",
        f"`self-generated`: the same units, answered on the clean image (noise step 0); "
        f"`weaken-only`: answered at noise step {s['noise_step']}.",
        "",
        "## Figure 7 — answer log-probabilities during training (BPO, SFT)",
        "",
    ]
    lines += [f"![Figure 7]({figures['figure7']})" if "figure7" in figures else "(no run to plot)", ""]
    lines += ["## Evidence filters — BPO on the filtered pairs vs on all of them", ""]
    if "bpo-filtered" in metrics:
        made = results["datasets"][FILTERED]
        lines += [
            _table([BASE, "bpo", "bpo-filtered"], runs, metrics),
            "",
            f"`bpo-filtered`: the weakened pairs through the default evidence filters {made['filters']} "
            f"(world verifier): {made['rows']} of {results['datasets'][WEAKENED]['rows']} kept.",
            "",
        ]
    else:
        lines += ["Not run (`--no-verify`).", ""]
    lines += ["## Figure 8 — data size: BPO vs SFT on 25 / 50 / 100 % of the pairs", ""]
    sweep_names = [n for n in ("bpo-25", "bpo-50", "bpo", "sft-25", "sft-50", "sft") if n in metrics]
    lines += [_table([BASE, *sweep_names], runs, metrics), ""]
    if "figure8" in figures:
        lines += [f"![Figure 8]({figures['figure8']})", ""]
    lines += [
        "## Pairs",
        "",
        "| pairs | noise step | rows | by type | generation rejects |",
        "|---|---:|---:|---|---|",
    ]
    for name, made in results["datasets"].items():
        lines.append(
            f"| {name} | {made['noise_step']} | {made['rows']} | {made['by_type']} | {made['rejects']} |"
        )
    lines += ["", "## Runs (each is the command that trained it)", ""]
    for name, run in runs.items():
        trained = f"{run['steps']} steps, loss {run['train_loss']:.3f}"
        lines.append(f"- `{name}` ({run['about']}; {trained}): `{run['command']}`")
    lines += [
        "",
        f"## Timings of this invocation ({s['threads']} torch thread(s); CPU seconds of this process "
        "beside the wall seconds; a rerun into the same folder skips finished stages)",
        "",
        "| stage | wall s | CPU s |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {stage} | {wall:.0f} | {results['cpu_s'].get(stage, 0):.0f} |"
        for stage, wall in results["timings_s"].items()
    ]
    lines += [f"| total | {results['total_s']:.0f} | {results['total_cpu_s']:.0f} |", "", "## Versions", ""]
    lines += [", ".join(f"{k} {v}" for k, v in results["versions"].items()), ""]
    return "\n".join(lines)
