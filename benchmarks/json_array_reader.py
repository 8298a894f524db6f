"""How to read a 230 MB JSON array of LLaVA records one at a time: the options, measured side by side.

Options (each run in a process of its own, so its peak RSS is its own):

- ``ijson-c``: ``ijson.items(f, "item")`` with the yajl2_c backend (what the readers used before);
- ``ijson-python``: the same with ijson's pure-Python backend;
- ``splitter``: a scanner that follows strings and brackets finds each item's end, then
  ``json.loads`` parses the item (every byte goes through the Python-level scanner loop);
- ``bpo-data``: ``bpo_data.sources.json_records.array_records`` — ``raw_decode`` where it can,
  the scanner only where an item is malformed or cut by the read window.

Besides speed on the big file, each option reads three small adversarial arrays: one item nested
100,000 deep (with an address-space limit, since ijson's C backend needs gigabytes for it), and
an integer >= 2**63 or a ``1e400`` in the middle of good records. Usage::

    python benchmarks/json_array_reader.py [--records 157712] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIONS = ("ijson-c", "ijson-python", "splitter", "bpo-data")
LIMIT_GIB = 2  # address space for the adversarial probes


def make_big(path: Path, records: int) -> None:
    """LLaVA-Instruct-150K's shape: COCO ids, a few exchanges per record, ~1.5 KB per record."""
    rng = random.Random(0)
    words = "the a dog cat red blue table left right of on under two three sign reads open man woman".split()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for i in range(records):
            conversations = []
            for turn in range(rng.choice((1, 2, 3, 5))):
                question = " ".join(rng.choices(words, k=rng.randint(5, 15))) + "?"
                answer = " ".join(rng.choices(words, k=rng.randint(20, 120))) + ".\n\nAlso é."
                prefix = "<image>\n" if turn == 0 else ""
                conversations += [
                    {"from": "human", "value": prefix + question},
                    {"from": "gpt", "value": answer},
                ]
            record = {
                "id": f"{rng.randrange(10**12):012d}",
                "image": f"{i:012d}.jpg",
                "conversations": conversations,
            }
            handle.write(("," if i else "") + json.dumps(record, indent=1))
        handle.write("]")


def make_probes(work: Path) -> dict[str, Path]:
    good = json.dumps({"id": "x", "image": "x.jpg", "conversations": []})
    probes = {
        "deep": "[" + good + "," + "[" * 100_000 + "]" * 100_000 + "," + good + "]",
        "int>=2**63": "[" + good + "," + json.dumps({"id": 2**63, "image": "y.jpg"}) + "," + good + "]",
        "1e400": "[" + good + ', {"id": "z", "score": 1e400},' + good + "]",
    }
    out = {}
    for name, text in probes.items():
        out[name] = work / f"probe-{name.replace('*', '').replace('>=', 'ge')}.json"
        out[name].write_text(text, encoding="utf-8")
    return out


def read_all(option: str, path: Path) -> tuple[int, int]:
    """(records read, items refused) with one option."""
    if option in ("ijson-c", "ijson-python"):
        import ijson

        backend = ijson.get_backend("yajl2_c" if option == "ijson-c" else "python")
        count = 0
        try:
            with open(path, "rb") as handle:
                for _ in backend.items(handle, "item", use_float=True):
                    count += 1
        except Exception:  # noqa: BLE001 - a stop is what is measured
            return count, 1
        return count, 0
    if option == "splitter":
        return _split_and_load(path)
    from bpo_data.sources.json_records import Broken, array_records

    good = bad = 0
    with open(path, "rb") as handle:
        for item in array_records(handle, path):
            bad += isinstance(item, Broken)
            good += not isinstance(item, Broken)
    return good, bad


def _split_and_load(path: Path) -> tuple[int, int]:
    """The plain splitter: the scanner finds every item's end, ``json.loads`` parses it."""
    from bpo_data.sources.json_records import _SPACE, _Scanner

    text = ""
    good = bad = 0
    with open(path, encoding="utf-8") as handle:
        text = handle.read(1 << 20)
        pos = _SPACE.match(text).end() + 1
        while True:
            if pos > 1 << 20:
                text, pos = text[pos:], 0
            pos = _SPACE.match(text, pos).end()
            if pos < len(text) and text[pos] == ",":
                pos = _SPACE.match(text, pos + 1).end()
            if pos >= len(text):
                more = handle.read(1 << 20)
                if not more:
                    return good, bad
                text += more
                continue
            if text[pos] == "]":
                return good, bad
            scanner = _Scanner()
            end = scanner.feed(text, pos)
            while end is None:
                more = handle.read(1 << 20)
                if not more:
                    return good, bad + 1
                scanned = len(text)
                text += more
                end = scanner.feed(text, scanned)
            try:
                json.loads(text[pos:end])
                good += 1
            except (ValueError, RecursionError):
                bad += 1
            pos = end


def child(option: str, path: str, limit: bool) -> None:
    import ijson  # noqa: F401 - imports are not what is timed

    import bpo_data.sources.json_records  # noqa: F401

    if limit:
        cap = LIMIT_GIB << 30
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    start = time.perf_counter()
    try:
        good, bad = read_all(option, Path(path))
        outcome = {"good": good, "bad": bad}
    except MemoryError:
        outcome = {"error": f"MemoryError under a {LIMIT_GIB} GiB address-space limit"}
    outcome["seconds"] = time.perf_counter() - start
    outcome["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(outcome))


def run_child(option: str, path: Path, limit: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", option, str(path)] + (["--limit"] if limit else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=157_712)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=OPTIONS)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--limit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.limit)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bpo-json-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        big = work / "big.json"
        make_big(big, args.records)
        probes = make_probes(work)
        print(
            f"file: {big.stat().st_size / 1e6:.0f} MB, {args.records} records; load {os.getloadavg()[0]:.2f}"
        )
        for option in args.options:
            runs = [run_child(option, big) for _ in range(args.repeats)]
            times = [r["seconds"] for r in runs if "seconds" in r]
            first = runs[0]
            line = (
                f"{option:13s} min {min(times):6.2f} s  median {statistics.median(times):6.2f} s  "
                f"peak RSS {max(r['peak_rss_mib'] for r in runs if 'peak_rss_mib' in r):6.0f} MiB  "
                f"records {first.get('good')}"
                if times
                else f"{option:13s} failed: {first}"
            )
            for name, path in probes.items():
                probe = run_child(option, path, limit=True)
                if "error" in probe:
                    line += f" | {name}: {probe['error']}"
                else:
                    read = f"{probe['good']} read, {probe['bad']} refused"
                    line += f" | {name}: {read} ({probe['peak_rss_mib']:.0f} MiB)"
            print(line, flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
