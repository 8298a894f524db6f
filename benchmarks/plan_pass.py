"""The plan's first pass with and without counting which objects answers name together.

A shard reads every unit of its sources once to plan; with the ``rules`` injector it also counts,
per source, which COCO objects the answers name together (``bpo_data.inject.cooccurrence``, over
each source's first 50,000 units). This prints what that costs, side by side on the same files,
the order alternated over the repeats. Usage:

    python benchmarks/plan_pass.py [--size 167710] [--repeats 3] [--work DIR]

The records are the data-path benchmark's (``cpu_data_path.py``): the three real formats in the
paper's proportions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cpu_data_path import PAPER, _pool, make_sources, rules_recipe

from bpo_data.generate import source_reader
from bpo_data.plan import make_plan
from bpo_data.recipe import Recipe


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=sum(PAPER.values()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        sources = make_sources(work, args.size, _pool(work, (48, 48)))
        recipe = Recipe.model_validate(rules_recipe("plan-pass", sources))
        read = source_reader(recipe, {})
        times: dict[bool, list[float]] = {False: [], True: []}
        units = counted = 0
        for repeat in range(args.repeats):
            for count in (False, True) if repeat % 2 == 0 else (True, False):
                start = time.perf_counter()
                plan = make_plan(recipe, list(recipe.sources), read, 0, 1, count_objects=count)
                times[count].append(time.perf_counter() - start)
                units = plan.units_read
                if count:
                    counted = sum(table.answers for table in plan.cooccurrence.values())
        plain, counting = statistics.median(times[False]), statistics.median(times[True])
        load = os.getloadavg()[0]
        print(f"{units:,} units ({counted:,} counted), median of {args.repeats} runs, load {load:.2f}")
        print(f"plan pass            {plain:6.2f} s  {units / plain:9,.0f} units/s")
        print(f"plan pass + counting {counting:6.2f} s  {units / counting:9,.0f} units/s")
        per_unit = (counting - plain) / counted * 1e6
        print(f"counting costs ×{counting / plain:.2f} the pass, {per_unit:.0f} µs a counted unit")


if __name__ == "__main__":
    main()
