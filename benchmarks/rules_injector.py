"""Throughput of the model-free ``rules`` injector on one core (the CPU data path's inner step).

    python benchmarks/rules_injector.py [--units 20000]

Answers are the synthetic 1–4 sentence texts of ``cpu_data_path.py`` (objects, colours, counts,
positions and a number in each sentence).
"""

from __future__ import annotations

import argparse
import random
import time

from cpu_data_path import _sentence

from bpo_data.inject.rules import RulesInjector
from bpo_data.schema import Unit


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(0)
    units = [
        Unit(
            key=f"s/{i}/0",
            source="s",
            record_id=str(i),
            turn=0,
            image="x.jpg",
            image_root="/",
            question="What is in the image?",
            answer=" ".join(_sentence(rng) for _ in range(1 + i % 4)),
        )
        for i in range(args.units)
    ]
    injector = RulesInjector(seed=0)
    start = time.perf_counter()
    rewritten = sum(injector.rewrite(unit) is not None for unit in units)
    elapsed = time.perf_counter() - start
    print(
        f"rules injector: {len(units)} units in {elapsed:.2f} s = {len(units) / elapsed:,.0f} units/s "
        f"({rewritten} rewritten)"
    )


if __name__ == "__main__":
    main()
