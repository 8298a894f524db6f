"""How truthful are kept negatives? Verification measured in the miniature world (issue 14, item 3).

For each held-out split of a world (``eval_clean``: the training distribution; ``eval_violating``:
scenes that break its prior) and each negative type, this makes pairs with the real pipeline, adds
evidence with ``bpo_data.verify`` (the world verifier by default), applies the filters, and judges
every rejected answer against the scene graph (``bpo_data.verify.world_truth``: an object named that
is absent, or a colour, size, count, position, sign or place stated wrong). It prints, per split and
type: the share of negatives that truly contradict the picture before and after the filters
(precision), the share of true contradictions kept (recall), and a sweep of the CLIP-margin threshold.

- ``inject``: the rules injector on the world's ground-truth answers (every turn);
- ``weaken``: the world model's answers to weakened pictures (needs ``bpo_data/world/model``, or
  ``--world-model DIR``; skipped with a note when there is none).

    python benchmarks/verify_world_precision.py                       # makes a world in a temp folder
    python benchmarks/verify_world_precision.py --world out/world --json verify-precision.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bpo_data.generate import generate
from bpo_data.jsonl import iter_jsonl
from bpo_data.recipe import FilterSpec, Recipe
from bpo_data.verify.clip import WORLD, load_scorer
from bpo_data.verify.filters import DEFAULT_FILTERS, refusal
from bpo_data.verify.folder import read_evidence, verify_folder
from bpo_data.verify.world_truth import contradictions
from bpo_data.world.make import make_world, read_scenes, source_specs

SPLITS = ("eval_clean", "eval_violating")
SWEEP = (-0.02, -0.01, 0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)


def _recipe(split_dir: Path, kind: str, model: str | None) -> Recipe:
    sources = [{**spec, "negatives": {kind: 1.0}, "turns": "all"} for spec in source_specs(split_dir)]
    raw = {
        "name": f"verify-{kind}",
        "model": model or "smoke",
        "sources": sources,
        "inject": {"injector": "rules"},
    }
    if kind == "weaken":
        raw["run"] = {"device": "cpu", "dtype": "float32", "weaken": {"engine": "hf", "batch_size": 32}}
    return Recipe.model_validate(raw)


def _world_model(given: str | None) -> str | None:
    if given:
        return given
    from bpo_data.world.model import world_model_dir

    try:
        folder = world_model_dir()
    except FileNotFoundError:
        return None
    return str(folder) if any(folder.glob("*.safetensors")) else None


def measure(split_dir: Path, out: Path, kind: str, scorer, model: str | None, filters) -> dict:
    started = time.time()
    generate(_recipe(split_dir, kind, model), out)
    verify_folder(out, scorer, batch_size=128)
    evidence = read_evidence(out)
    scenes = {scene.id: scene for scene in read_scenes(split_dir)}
    rows = []
    for path in sorted(out.glob("pairs-*.jsonl")):
        for pair in iter_jsonl(path):
            scene = scenes[pair["record_id"].removeprefix("llavar_").split("~")[0]]
            question = pair["prompt"][-1]["content"]
            truth = bool(contradictions(pair["rejected"], scene, question))
            chosen_wrong = bool(contradictions(pair["chosen"], scene, question))
            rows.append((evidence[pair["key"]], truth, chosen_wrong))
    return {"report": report(rows, filters), "seconds": round(time.time() - started, 1)}


def report(rows, filters) -> dict:
    """Precision and recall of the filters against the scene-graph truth, and a margin sweep."""
    total, true = len(rows), sum(t for _, t, _ in rows)

    def after(thresholds) -> dict:
        kept = [t for e, t, _ in rows if all(refusal(e, f) is None for f in thresholds)]
        return {
            "kept": len(kept),
            "precision": _pct(sum(kept), len(kept)),
            "recall": _pct(sum(kept), true),
            "true_dropped": _pct(true - sum(kept), true),
        }

    return {
        "pairs": total,
        "chosen_contradicting": sum(c for _, _, c in rows),
        "contradict_before": _pct(true, total),
        "default_filters": after(filters),
        "sweep": {m: after([FilterSpec(min_clip_margin=m)]) for m in SWEEP},
    }


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--world", type=Path, help="a world made by `bpo-data world make` (default: make one)"
    )
    parser.add_argument(
        "--eval-scenes", type=int, default=300, help="held-out scenes per split when making one"
    )
    parser.add_argument("--clip-model", default=WORLD)
    parser.add_argument("--clip-pretrained", default=None)
    parser.add_argument("--world-model", help="the LLaVA world model for weaken negatives")
    parser.add_argument("--kinds", nargs="+", default=["inject", "weaken"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    scorer = load_scorer(args.clip_model, args.clip_pretrained)
    filters = [FilterSpec.model_validate(f) for f in DEFAULT_FILTERS]
    model = _world_model(args.world_model)
    results: dict = defaultdict(dict)
    with tempfile.TemporaryDirectory(prefix="bpo-verify-world-") as scratch:
        world = args.world
        if world is None:
            world = Path(scratch) / "world"
            make_world(world, 1, 0, eval_scenes=args.eval_scenes, objhal_scenes=1)
        for split in SPLITS:
            for kind in args.kinds:
                if kind == "weaken" and model is None:
                    results[split][kind] = "skipped: no world model (bpo_data/world/model or --world-model)"
                    continue
                out = Path(scratch) / f"{split}-{kind}"
                results[split][kind] = measure(world / split, out, kind, scorer, model, filters)
    print(f"verifier {scorer.model_id}; default filters {DEFAULT_FILTERS}")
    for split, kinds in results.items():
        for kind, result in kinds.items():
            if isinstance(result, str):
                print(f"{split:15s} {kind:7s} {result}")
                continue
            r, d = result["report"], result["report"]["default_filters"]
            print(
                f"{split:15s} {kind:7s} pairs {r['pairs']:5d}  contradict {r['contradict_before']}% → kept "
                f"{d['kept']} at precision {d['precision']}%, recall {d['recall']}% "
                f"(true contradictions dropped {d['true_dropped']}%; "
                f"chosen judged wrong: {r['chosen_contradicting']})"
            )
            for margin, s in r["sweep"].items():
                print(
                    f"    min_clip_margin {margin:+.3f}: kept {s['kept']:5d} "
                    f"precision {s['precision']}% recall {s['recall']}%"
                )
    if args.json:
        args.json.write_text(json.dumps({"verifier": scorer.model_id, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
