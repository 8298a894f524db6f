"""Wire a recipe to its engines and run one shard with a progress bar.

A shard owns one model for its whole life: the LLaVA runtime is loaded once and shared by the
weakening engine and (when the injector is the MLLM's own language model) the text engine.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from bpo_data.generate import GenerateOptions, NegativeMaker, RunSummary, ShardRun
from bpo_data.recipe import Recipe
from bpo_data.smoke_model import SMOKE_MODEL_ID, ensure_smoke_model


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} pairs/s" if speed else "… pairs/s")


def model_path(model_id: str) -> str:
    return str(ensure_smoke_model()) if model_id == SMOKE_MODEL_ID else model_id


def needed_types(recipe: Recipe, sources: list[str] | None) -> set[str]:
    kinds: set[str] = set()
    for spec in recipe.sources:
        if sources is not None and spec.name not in sources:
            continue
        kinds.update(
            ["weaken", "inject"]
            if spec.negatives == "both"
            else [k for k, v in spec.negatives.items() if v > 0]
        )
    return kinds


def build_makers(recipe: Recipe, kinds: set[str]) -> tuple[dict[str, NegativeMaker], list[str]]:
    """The makers for the negative types the run needs, and the generator ids they record."""
    from bpo_data.negatives.injection import InjectedNegatives
    from bpo_data.negatives.weakening import WeakenedNegatives

    meta = {"smoke_model": True} if recipe.model == SMOKE_MODEL_ID else {}
    weaken_engine = recipe.weaken.engine if "weaken" in kinds else None
    inject_engine = recipe.inject.engine if "inject" in kinds else None
    runtime = None
    if "hf" in (weaken_engine, inject_engine):
        from bpo_data.engines.hf import LlavaRuntime

        runtime = LlavaRuntime.load(model_path(recipe.model), recipe.device, recipe.dtype)
    vllm_runtime = None
    if "vllm" in (weaken_engine, inject_engine):
        from bpo_data.engines.vllm_engine import VllmRuntime

        vllm_runtime = VllmRuntime.load(
            model_path(recipe.model),
            recipe.vllm,
            recipe.device,
            recipe.dtype,
            recipe.seed,
            images=weaken_engine == "vllm",
        )
    makers: dict[str, NegativeMaker] = {}
    generators: list[str] = []
    if weaken_engine is not None:
        if weaken_engine == "vllm":
            from bpo_data.engines.vllm_engine import VllmVisionEngine

            engine = VllmVisionEngine(vllm_runtime)
        else:
            from bpo_data.engines.hf import HFVisionEngine

            engine = HFVisionEngine(runtime)
        generator = f"{weaken_engine}:{recipe.model}"
        makers["weaken"] = WeakenedNegatives(engine, recipe.weaken, recipe.seed, generator, meta)
        generators.append(generator)
    if inject_engine is not None:
        maker = InjectedNegatives.from_recipe(recipe, runtime, meta, vllm_runtime=vllm_runtime)
        makers["inject"] = maker
        generators.append(maker.generator)
    return makers, generators


def run_shard(
    recipe: Recipe, options: GenerateOptions, console: Console | None = None, progress: bool = True
) -> RunSummary:
    kinds = needed_types(recipe, options.sources)
    if recipe.model == SMOKE_MODEL_ID and console is not None:
        console.print(
            "[yellow]smoke model: a tiny random LLaVA built locally; its weakened answers are noise[/]"
        )
    shard_run = ShardRun(recipe, options, lambda: build_makers(recipe, kinds))
    if not progress or console is None:
        return shard_run.run()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{recipe.name} shard {options.shard_index}/{options.num_shards}", total=None)

        def hook(advance: int, total: int) -> None:
            if total >= 0:
                bar.update(task, total=total)
            if advance:
                bar.advance(task, advance)

        return shard_run.run(hook)
