"""``bpo-data world probe``: Figure 5 in miniature (see ``bpo_data.world.probe``).

Mounted beside the other world commands in ``bpo_data.world.cli``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

# Figure 5's steps (probe.DEFAULT_STEPS), spelled here so that `bpo-data --help` imports no torch.
STEPS_FLAG_DEFAULT = ",".join(str(step) for step in range(0, 1000, 100))


def _steps(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise typer.BadParameter(
            f"--steps {text!r}: give comma-separated integers, e.g. 0,300,600,900"
        ) from err
    if not steps or any(not 0 <= s <= 999 for s in steps):
        raise typer.BadParameter(f"--steps {text!r}: each step must lie in 0..999")
    return steps


def probe_command(
    world: Annotated[Path, typer.Option(help="a world made by `bpo-data world make`")],
    out: Annotated[Path, typer.Option(help="folder for figure5.md, figure5.json and figure5.png")],
    model: Annotated[
        str, typer.Option(help="a model folder, or 'world' for the shipped world model")
    ] = "world",
    scenes: Annotated[int, typer.Option(min=1, help="prior-violating held-out scenes to describe")] = 40,
    steps: Annotated[
        str, typer.Option(help="noise steps, comma-separated (0 = the clean image)")
    ] = STEPS_FLAG_DEFAULT,
    space: Annotated[
        list[str] | None, typer.Option(help="noise space: pixel and/or features (default both)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of each scene's noise draw")] = 0,
) -> None:
    """Figure 5: per noise step, how often the model names an absent prior partner; KL from the clean view."""
    from bpo_data.models import resolve_model
    from bpo_data.world.probe import FIGURE_FILE, SPACES, TABLE_FILE, ProbeInputError, probe

    started = time.time()
    try:
        probe(
            Path(resolve_model(model)),
            world,
            out,
            scenes=scenes,
            steps=_steps(steps),
            spaces=space or list(SPACES),
            seed=seed,
            log=lambda m: typer.echo(m, err=True),
        )
    except ProbeInputError as err:  # an unknown --space, no held-out scenes; not an error mid-run
        raise typer.BadParameter(str(err)) from None
    typer.echo((out / TABLE_FILE).read_text(encoding="utf-8"))
    typer.echo(f"wrote {out / FIGURE_FILE} in {time.time() - started:.0f}s", err=True)
