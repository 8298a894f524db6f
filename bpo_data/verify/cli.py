"""``bpo-data verify …``: add evidence to existing shards, and train the world verifier.

The lead mounts ``verify_app`` on the main CLI (``app.add_typer(verify_app, name="verify")``)::

    bpo-data verify out/bpo --clip-model world            # = bpo-data verify dir out/bpo …
    bpo-data verify out/bpo --shard 3/8                   # one of 8 processes; rerun to resume
    bpo-data verify train-world --out bpo_data/verify/world_clip   # the command that made the shipped one
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from bpo_data.verify.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED


class _FolderByDefault(TyperGroup):
    """``verify DIR`` runs the ``dir`` command: the first word is a folder unless it names a command."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["dir", *args]
        return super().parse_args(ctx, args)


verify_app = typer.Typer(
    cls=_FolderByDefault,
    add_completion=False,
    no_args_is_help=True,
    help="Measure each pair's evidence (object diff, open-clip scores, text overlap); train the verifier.",
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@verify_app.command("dir")
def verify_dir(
    folder: Annotated[Path, typer.Argument(help="a folder `bpo-data generate` wrote")],
    shard: Annotated[str, typer.Option(help="this process's share i/N of the pairs")] = "0/1",
    clip_model: Annotated[
        str,
        typer.Option(help="open-clip model name, hf-hub:org/repo, a local folder, or 'world' (shipped)"),
    ] = DEFAULT_MODEL,
    clip_pretrained: Annotated[
        str | None, typer.Option(help="pretrained tag or weights file for a model name")
    ] = DEFAULT_PRETRAINED,
    no_clip: Annotated[bool, typer.Option("--no-clip", help="object diff and overlap only")] = False,
    device: Annotated[str, typer.Option(help="torch device for CLIP")] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="pairs per CLIP batch")] = 64,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch")] = None,
) -> None:
    """Add evidence to every pair of FOLDER (verified-i-of-N.jsonl); a rerun skips what is done."""
    from bpo_data.store import parse_shard_spec
    from bpo_data.verify.clip import VerifierUnavailable, load_scorer
    from bpo_data.verify.folder import VerifyError, verify_folder

    try:
        index, total = parse_shard_spec(shard)
    except ValueError as err:
        _fail(str(err))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        scorer = None if no_clip else load_scorer(clip_model, clip_pretrained, device)
        summary = verify_folder(folder, scorer, (index, total), batch_size)
    except (VerifierUnavailable, VerifyError) as err:
        _fail(str(err))
    typer.echo(json.dumps(summary.to_dict(), indent=2))


@verify_app.command("train-world")
def train_world(
    out: Annotated[
        Path, typer.Option(help="folder for the verifier (bpo_data/verify/world_clip: the shipped one)")
    ],
    steps: Annotated[int | None, typer.Option(min=1, help="training steps")] = None,
    scenes: Annotated[int | None, typer.Option(min=1, help="training scenes")] = None,
    seed: Annotated[int, typer.Option(help="seed of the scenes, the twins and the weights")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for torch")] = 2,
) -> None:
    """Train the miniature world's open-clip verifier on CPU and save it in open-clip's folder layout."""
    from dataclasses import replace

    from bpo_data.verify.world_verifier import WorldClipSettings, train_world_verifier

    settings = WorldClipSettings(seed=seed, threads=threads)
    settings = replace(settings, steps=steps or settings.steps, scenes=scenes or settings.scenes)
    provenance = train_world_verifier(out, settings, log=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(provenance, indent=2))
