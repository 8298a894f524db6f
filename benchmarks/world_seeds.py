"""The miniature reproduction over several seeds: the figures BENCHMARKS and the README quote.

    python benchmarks/world_seeds.py R0 R1 R2 R3 R4 [--more V0 V1 V2 V3 V4] [--more T0 T1 T2 T3 T4]

Each R is a ``bpo-train world-repro --out R --seed s`` folder (its ``results.json``). Each ``--more``
set, when given, holds other scenes of the same world measured for the same seeds: its V holds
``bpo-train world-eval --world W2 --adapter R/runs/RUN --skip K --out V/RUN``, and the set's first V
also ``V/base``, the base model's (one model, so it is measured once for every seed), W2 the world made again
with more held-out scenes (the first ones are the same), e.g. the scenes a setting is chosen on, or
scenes nobody has looked at. For every run this prints the violating CHAIRi and QA of each seed, the mean of
every column of the report's Table 2 (and QA over both splits), its change against the base model
(violating and Object HalBench CHAIRi, the errors the prior explains, the others, all mentions) and the
hallucinated mentions by kind; for each ``--more`` set the same on its scenes, and violating CHAIRi over
the reproduction's scenes and that set's, mentions pooled (and over all of them when there are several
sets). Each drop in violating CHAIRi comes with how far it could move: a 95 % interval over scenes (a
bootstrap that draws the same scenes for every model and seed) and its standard error over seeds.
A seed's figure is one model; only the spread over seeds says how far to trust a mean.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np

from trainer_min.world_repro import BASE, COLUMNS, _change, _relative_drop, qa_mean, violating_chair_i

KINDS = ("partner", "first", "other")  # what the prior explains: absent partner, first object, neither
COLUMNS_AND_QA = (*COLUMNS, ("QA", qa_mean))  # the helpfulness figure the tables quote
ROUNDS = 2000  # bootstrap draws of the scenes


def _world_eval(path: Path) -> dict[str, Any]:
    """A world-eval ``metrics.json``; one written before Object HalBench joined it held the world's alone."""
    metrics = json.loads(path.read_text("utf-8"))
    return metrics if "world" in metrics else {"world": metrics}


def _chair(metrics: dict[str, Any]) -> dict[str, Any]:
    return metrics["world"]["eval_violating"]["chair"]


def _errors(kinds: tuple[str, ...]) -> Callable[[dict[str, Any]], float]:
    return lambda m: sum(_chair(m)["hallucinated_by_kind"][k] for k in kinds)


# What "vs base" compares: the two CHAIRi the targets read, then where the errors and mentions went.
VS_BASE: tuple[tuple[str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("violating", violating_chair_i),
    ("ObjHal", dict(COLUMNS)["ObjHal CHAIRi"]),
    ("the prior's errors", _errors(KINDS[:2])),
    ("other errors", _errors(KINDS[2:])),
    ("mentions", lambda m: _chair(m)["mentions"]),
)


def _mean_of(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float | None]) -> float | None:
    values = [get(m) for m in runs]
    return None if None in values else mean(values)


def _table(seeds: list[dict[str, dict[str, Any]]], title: str) -> None:
    """One line per run: per-seed violating CHAIRi, then the mean of each column over the seeds."""
    print(f"\n{title}")
    base = seeds[0].get(BASE)
    for name in [n for n in seeds[0] if all(n in s for s in seeds)]:
        runs = [s[name] for s in seeds]
        mean_of = partial(_mean_of, runs)
        cells = [
            f"{column} {value:.1f}" for column, get in COLUMNS_AND_QA if (value := mean_of(get)) is not None
        ]
        kinds = " / ".join(f"{mean_of(_errors((k,))):.1f}" for k in KINDS)
        print(
            f"  {name}: violating CHAIRi per seed {' / '.join(f'{violating_chair_i(m):.1f}' for m in runs)}; "
            f"QA per seed {' / '.join(f'{qa_mean(m):.1f}' for m in runs)}"
        )
        print(f"    mean: {'; '.join(cells)}")
        print(f"    hallucinated {'/'.join(KINDS)} {kinds}; mentions {mean_of(VS_BASE[-1][1]):.1f}")
        if base is not None and name != BASE:
            changes = [
                f"{label} {_change(_relative_drop(get(base), mean_of(get)))}"
                for label, get in VS_BASE
                if get(base) is not None and mean_of(get) is not None
            ]
            print(f"    vs base: {'; '.join(changes)}")
            per_seed = [violating_chair_i(m) for m in runs]
            spread = _spread_text(_drop_spread([seeds], name, violating_chair_i(base), per_seed))
            if spread:
                print(f"    violating CHAIRi: {spread}")


def _pooled(sets: list[list[dict[str, dict[str, Any]]]], title: str) -> None:
    """Violating CHAIRi over several sets of scenes, each seed's mentions pooled, then the mean over seeds."""
    print(f"\n{title}, mentions pooled")

    def pooled(name: str) -> list[float]:
        return [
            sum(_chair(s[name])["hallucinated_mentions"] for s in seed)
            / sum(_chair(s[name])["mentions"] for s in seed)
            * 100
            for seed in zip(*sets)
        ]

    names = [n for n in sets[0][0] if all(n in s for seeds in sets for s in seeds)]
    base = mean(pooled(BASE)) if BASE in names else None
    for name in names:
        values = pooled(name)
        line = f"  {name}: per seed {' / '.join(f'{p:.1f}' for p in values)}, mean {mean(values):.2f}"
        if base is not None and name != BASE:
            line += f" ({_change(_relative_drop(base, mean(values)))} than base {base:.2f})"
            spread = _spread_text(_drop_spread(sets, name, base, values))
            line += f"; {spread}" if spread else ""
        print(line)


def _spread_text(spread: tuple[float, float, float | None] | None) -> str:
    if spread is None:
        return ""
    low, high, seeds_error = spread
    over_seeds = "" if seeds_error is None else f", over seeds ±{seeds_error:.1f} (standard error)"
    return f"the drop 95 % over scenes {low:.1f} to {high:.1f} %{over_seeds}"


def _per_description(sets: list[list[dict[str, dict[str, Any]]]], name: str) -> np.ndarray | None:
    """[seed, scene, (mentions, hallucinated)] over every set's scenes, or None where one lacks the counts."""
    seeds = []
    for seed in zip(*sets):
        rows = [_chair(s[name]).get("per_description") for s in seed]
        if None in rows:
            return None
        seeds.append([row for set_rows in rows for row in set_rows])
    return np.asarray(seeds, dtype=float)


def _drop_spread(
    sets: list[list[dict[str, dict[str, Any]]]], name: str, base: float, values: list[float]
) -> tuple[float, float, float | None] | None:
    """How far a pooled drop against the base model could move: the 2.5th and 97.5th percentiles over
    scenes, and the standard error over seeds (both in the drop's own unit, percent of the base's CHAIRi).

    The scenes are drawn again with replacement, each set within itself, and the same draw serves the
    base model and every seed, because a scene that draws out the prior does so in every model (the
    pairing is what makes a gap far surer than either CHAIRi). Seeds are not redrawn: their spread is
    the second figure, the per-seed drops' standard deviation over the square root of their number.
    """
    run, reference = _per_description(sets, name), _per_description(sets, BASE)
    if run is None or reference is None or run.shape[1] != reference.shape[1]:
        return None
    rng = np.random.default_rng(0)
    sizes = [len(_chair(seeds[0][name])["per_description"]) for seeds in sets]
    starts = np.cumsum([0, *sizes[:-1]])
    draw = np.concatenate(
        [start + rng.integers(0, size, (ROUNDS, size)) for start, size in zip(starts, sizes)], axis=1
    )

    def chair_i(counts: np.ndarray) -> np.ndarray:  # [rounds]: the mean over seeds of pooled CHAIRi
        drawn = counts[:, draw]  # [seed, round, scene, 2]
        return (drawn[..., 1].sum(-1) / drawn[..., 0].sum(-1)).mean(0)

    drops = (1 - chair_i(run) / chair_i(reference)) * 100
    low, high = np.percentile(drops, [2.5, 97.5])
    per_seed = [(1 - v / base) * 100 for v in values]
    seeds_error = float(np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else None
    return float(low), float(high), seeds_error


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repros", nargs="+", type=Path, help="world-repro folders, one per seed")
    parser.add_argument(
        "--more",
        nargs="+",
        type=Path,
        action="append",
        default=[],
        help="world-eval folders of other scenes, one per seed (a set; give --more again for another)",
    )
    args = parser.parse_args()
    for folders in args.more:
        if len(folders) != len(args.repros):
            parser.error(f"--more needs one folder per seed ({len(args.repros)}), got {len(folders)}")
    repros = [json.loads((r / "results.json").read_text("utf-8"))["metrics"] for r in args.repros]
    _table(repros, f"{len(repros)} seeds, the reproduction's own scenes")
    sets = [
        [{run.name: _world_eval(run / "metrics.json") for run in sorted(v.iterdir())} for v in folders]
        for folders in args.more
    ]
    for more in sets:
        if BASE in more[0]:
            for seed in more[1:]:
                seed.setdefault(BASE, more[0][BASE])
    for folders, more in zip(args.more, sets):
        _table(more, f"the scenes of {', '.join(map(str, folders))}")
    for folders, more in zip(args.more, sets):
        _pooled([repros, more], f"the reproduction's scenes and {folders[0]}'s")
    if len(sets) > 1:
        _pooled([repros, *sets], "all these scenes")


if __name__ == "__main__":
    main()
