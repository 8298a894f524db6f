"""The miniature reproduction over several seeds: the figures BENCHMARKS and the README quote.

    python benchmarks/world_seeds.py R0 R1 R2 R3 R4 [--more V0 V1 V2 V3 V4]

Each R is a ``bpo-train world-repro --out R --seed s`` folder (its ``results.json``). Each V, when
given, holds ``bpo-train world-eval --world W400 --adapter R/runs/RUN --skip 200 --out V/RUN`` of the
same seed, and ``V/base`` the base model's (the same in every seed): the scenes that choose. For every
run this prints the violating CHAIRi of each seed, the mean of every column of the report's Table 2
(and QA over both splits), its change against the base model (violating and Object HalBench CHAIRi,
the errors the prior explains, the others, all mentions) and the hallucinated mentions by kind; with
``--more``, the same on those scenes and violating CHAIRi over both sets of scenes, mentions pooled.
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

from trainer_min.world_repro import BASE, COLUMNS, _change, _relative_drop, violating_chair_i

KINDS = ("partner", "first", "other")  # what the prior explains: absent partner, first object, neither
_QA = (dict(COLUMNS)["QA clean"], dict(COLUMNS)["QA violating"])
# the helpfulness figure the tables quote: QA accuracy over both splits, each counted once
COLUMNS_AND_QA = (*COLUMNS, ("QA", lambda m: None if None in (q := [g(m) for g in _QA]) else mean(q)))


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
            f"  {name}: violating CHAIRi per seed {' / '.join(f'{violating_chair_i(m):.1f}' for m in runs)}"
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


def _pooled(first: list[dict[str, dict[str, Any]]], second: list[dict[str, dict[str, Any]]]) -> None:
    """Violating CHAIRi over both sets of scenes, each seed's mentions pooled, then the mean over seeds."""
    print("\nboth sets of scenes, mentions pooled")

    def pooled(name: str) -> list[float]:
        counts = [(_chair(a[name]), _chair(b[name])) for a, b in zip(first, second)]
        return [
            (ca["hallucinated_mentions"] + cb["hallucinated_mentions"])
            / (ca["mentions"] + cb["mentions"])
            * 100
            for ca, cb in counts
        ]

    names = [n for n in first[0] if all(n in s for s in first + second)]
    base = mean(pooled(BASE)) if BASE in names else None
    for name in names:
        values = pooled(name)
        line = f"  {name}: per seed {' / '.join(f'{p:.1f}' for p in values)}, mean {mean(values):.2f}"
        if base is not None and name != BASE:
            line += f" ({_change(_relative_drop(base, mean(values)))} than base {base:.2f})"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repros", nargs="+", type=Path, help="world-repro folders, one per seed")
    parser.add_argument("--more", nargs="*", type=Path, default=[], help="world-eval folders, one per seed")
    args = parser.parse_args()
    if args.more and len(args.more) != len(args.repros):
        parser.error(f"--more needs one folder per seed ({len(args.repros)}), got {len(args.more)}")
    repros = [json.loads((r / "results.json").read_text("utf-8"))["metrics"] for r in args.repros]
    _table(repros, f"{len(repros)} seeds, the reproduction's own scenes")
    if args.more:
        more = [
            {run.name: _world_eval(run / "metrics.json") for run in sorted(v.iterdir())} for v in args.more
        ]
        _table(more, "the --more scenes")
        _pooled(repros, more)


if __name__ == "__main__":
    main()
