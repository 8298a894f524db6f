"""``bpo-data world …``: make a miniature world, train its model, measure it.

The lead mounts ``world_app`` on the main CLI (``app.add_typer(world_app, name="world")``).
``train`` with its defaults is the command that made the shipped model::

    bpo-data world train --out bpo_data/world/model
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from bpo_data.world.params import HELD_OUT_SCENES
from bpo_data.world.probe_cli import probe_command

world_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The miniature world: synthetic scenes, their three sources, and a tiny LLaVA trained on them.",
)

DEFAULT_SCENES = 6000
EVALUATION_FILE = "evaluation.json"


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _say(message: str) -> None:
    typer.echo(message, err=True)


@world_app.command()
def make(
    out: Annotated[Path, typer.Option(help="folder to write the world into")],
    scenes: Annotated[int, typer.Option(min=1, help="training scenes")] = DEFAULT_SCENES,
    seed: Annotated[int, typer.Option(help="the world's seed")] = 0,
    eval_scenes: Annotated[int, typer.Option(min=1, help="scenes in each held-out split")] = HELD_OUT_SCENES,
    objhal_scenes: Annotated[int, typer.Option(min=1, help="Object-HalBench-style scenes")] = 300,
) -> None:
    """Write scenes, pictures and the ShareGPT4V / LLaVAR / LLaVA-Instruct files of a world."""
    from bpo_data.world.make import make_world

    started = time.time()
    record = make_world(out, scenes, seed, eval_scenes, objhal_scenes)
    for split, counts in record["splits"].items():
        _say(f"{split:15s} {counts}")
    for pair, stats in record["train_prior"]["partner_rate"].items():
        _say(f"train prior {pair:22s} partner in {stats['rate']:.1%} of {stats['scenes']} scenes")
    _say(f"wrote {out} in {time.time() - started:.0f}s")


@world_app.command()
def sample(
    out: Annotated[Path, typer.Option(help="folder for the embedded sample")] = Path("bpo_data/world/sample"),
    seed: Annotated[int, typer.Option(help="the world's seed")] = 0,
) -> None:
    """Write the small embedded sample (held-out scenes in the three formats) that ships with the package."""
    from bpo_data.world.make import make_sample

    _say(f"{out}: {make_sample(out, seed)}")


@world_app.command()
def train(
    out: Annotated[
        Path,
        typer.Option(help="folder for the trained model (bpo_data/world/model to rebuild the shipped one)"),
    ],
    world: Annotated[
        Path | None,
        typer.Option(help="a world made by `world make`; default: make one in a temporary folder"),
    ] = None,
    scenes: Annotated[
        int, typer.Option(min=1, help="training scenes when the world is made here")
    ] = DEFAULT_SCENES,
    seed: Annotated[int, typer.Option(help="seed of the world (when made here) and of training")] = 0,
    epochs: Annotated[
        float | None, typer.Option(min=0.01, help="passes over the examples, with --max-steps 0 [default: 1]")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="stage-2 steps; > 0 overrides --epochs [default: 5400]")
    ] = None,
    vision_steps: Annotated[
        int | None, typer.Option(min=1, help="stage-1 steps, the vision tower's pre-training [default: 300]")
    ] = None,
    vision_pictures: Annotated[
        int | None,
        typer.Option(min=1, help="colour-balanced pictures drawn for stage 1 [default: 12000]"),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for torch")] = 2,
    text_hidden: Annotated[
        int | None,
        typer.Option(
            min=32, help="the language model's width, a multiple of 32 (one head per 32) [default: 128]"
        ),
    ] = None,
    text_layers: Annotated[
        int | None, typer.Option(min=1, help="the language model's layers [default: 4]")
    ] = None,
    eval_limit: Annotated[
        int | None, typer.Option(help="held-out scenes to evaluate per split (default all)")
    ] = None,
    evaluate_after: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="measure the model on the held-out splits")
    ] = True,
) -> None:
    """Train the world model from scratch on CPU, save it with its provenance, and print its metrics."""
    from dataclasses import replace

    from bpo_data.world.make import make_world
    from bpo_data.world.model import ModelSpec
    from bpo_data.world.train import TrainSettings, train_world_model
    from bpo_data.world.vision import VisionSettings

    if text_hidden is not None and text_hidden % 32:
        raise typer.BadParameter(
            f"{text_hidden} is not a multiple of 32 (each head is 32 wide); "
            f"try {round(text_hidden / 32) * 32 or 32}",
            param_hint="--text-hidden",
        )
    spec = ModelSpec()
    spec = replace(
        spec,
        text_hidden=text_hidden or spec.text_hidden,
        text_heads=(text_hidden or spec.text_hidden) // 32,
        text_layers=text_layers or spec.text_layers,
    )
    _quiet()
    started, cpu = time.time(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="bpo-world-") as scratch:
        if world is None:
            world = Path(scratch) / "world"
            _say(f"making a world of {scenes} training scenes (seed {seed})")
            # 200 held-out scenes, as when the shipped model was made: its provenance records the world,
            # stage 1 measures itself on up to 256 scenes of each split, and the evaluation on all of them
            make_world(world, scenes, seed, eval_scenes=200)
        given = {"epochs": epochs, "max_steps": max_steps}
        vision = {"steps": vision_steps, "pictures": vision_pictures}
        settings = TrainSettings(
            seed=seed,
            threads=threads,
            spec=spec,
            vision=VisionSettings(**{key: value for key, value in vision.items() if value is not None}),
            **{key: value for key, value in given.items() if value is not None},
        )
        provenance = train_world_model(world, out, settings, log=_say)
        wall, cpu_s = provenance["wall_s"], provenance["cpu_s"]
        _say(f"trained {provenance['steps']} steps in {wall:.0f}s wall, {cpu_s:.0f}s CPU")
        if evaluate_after:
            _evaluate(out, world, eval_limit)
    _say(f"total {time.time() - started:.0f}s wall, {time.process_time() - cpu:.0f}s CPU (this process)")


@world_app.command()
def evaluate(
    world: Annotated[Path, typer.Option(help="a world made by `world make`")],
    model: Annotated[
        str, typer.Option(help="a model folder, or 'world' for the shipped world model")
    ] = "world",
    limit: Annotated[int | None, typer.Option(help="held-out scenes per split (default all)")] = None,
) -> None:
    """Print CHAIR, recall, QA accuracy and the prior of a model on a world's held-out splits."""
    from bpo_data.world.model import WORLD_MODEL_ID, world_model_dir

    _quiet()
    _evaluate(world_model_dir() if model == WORLD_MODEL_ID else Path(model), world, limit, save=False)


def _evaluate(model_dir: Path, world: Path, limit: int | None, save: bool = True) -> None:
    from bpo_data.world.evaluate import evaluate_world_model, format_report

    started = time.time()
    report = evaluate_world_model(model_dir, world, limit=limit, log=_say)
    typer.echo(format_report(report))
    for example in report["examples"]:
        objects = ", ".join(f"{o['colour']} {o['cls']}" for o in example["scene"]["objects"])
        typer.echo(f"[{example['split']}] scene: {objects}\n  model: {example['description']}")
    if save:
        (Path(model_dir) / EVALUATION_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _say(f"evaluated in {time.time() - started:.0f}s")


world_app.command("probe")(probe_command)
