"""MM-Vet, scored as the official evaluator (yuweihao/MM-Vet, mm-vet_evaluator.py) scores it.

The grader is a few-shot completion prompt: the prompt text, a newline, then the item's table row
``question | ground truth | prediction | `` left open. The judge answers at temperature 0 with at
most 3 tokens and the first space-separated token must be a number in [0, 1]. When it is not, the
official script re-asks with "Predict the correctness of the answer (digit): " appended: the first
re-ask keeps temperature 0 and each later one adds 0.5, and after five unparsable answers the
item scores 0.0 (the official script makes a sixth call whose answer it never reads; it is skipped
here, which changes no score). Scores: per capability the mean over the items carrying it (an item
counts fully in each of its capabilities), per capability *integration* (the exact set of an
item's capabilities) likewise, and the total over all items; ×100, averaged over ``runs``, with
the population std of the run totals, rounded as the official script rounds.

The prompt is the official evaluator's few-shot text, verbatim (``resources/mmvet_grader_prompt.txt``,
see its NOTICE.md); ``prompt_file`` replaces it with another text.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import trainer_min.eval.common as common
from trainer_min.eval.answer import Question, image_file
from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import Judge, JudgeRequest, ask_until_parsed

DATA_FILE = "mm-vet.json"
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
# Temperature of each try; every try after the first carries RETRY_SUFFIX.
TEMPERATURES = (0.0, 0.0, 0.5, 1.0, 1.5)
MAX_TOKENS = 3
DECIMALS = 1


@dataclass(frozen=True)
class MMVetItem:
    id: str
    image: str
    question: str
    answer: str
    capabilities: tuple[str, ...]


def load_items(data_dir: Path) -> list[MMVetItem]:
    """The items of ``mm-vet.json`` in file order, checked field by field."""
    path = data_dir / DATA_FILE
    if not path.is_file():
        raise EvalError(
            f"{path} not found: --data must hold the unzipped MM-Vet release (mm-vet.json, images/)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise EvalError(f"{path}: not valid JSON ({err})") from err
    items = []
    for key, record in raw.items():
        try:
            capabilities = tuple(record["capability"])
            item = MMVetItem(key, record["imagename"], record["question"], record["answer"], capabilities)
        except (KeyError, TypeError) as err:
            raise EvalError(
                f"{path}: record {key!r} lacks {err}; records need imagename, question, answer, capability"
            ) from None
        unknown = set(capabilities) - set(CAPABILITIES)
        if unknown or not capabilities:
            raise EvalError(
                f"{path}: record {key!r} has capabilities {list(capabilities)}; use {CAPABILITIES}"
            )
        items.append(item)
    return items


def questions(items: Sequence[MMVetItem], data_dir: Path) -> list[Question]:
    """The questions as asked, with no added instruction (as LLaVA-1.5's MM-Vet evaluation asks them)."""
    root = data_dir / "images"
    return [
        Question(i.id, i.question, image_file(root, i.image, f"{DATA_FILE} record {i.id}")) for i in items
    ]


def load_prompt(prompt_file: Path | None) -> str:
    """The grader prompt: the file's text verbatim, or the official evaluator's."""
    return common.load_prompt(prompt_file, "mmvet_grader_prompt.txt", "--prompt-file")


def grader_message(prompt: str, item: MMVetItem, prediction: str, retry: bool) -> str:
    """The single user message: prompt, newline, the item's open table row (and the re-ask suffix)."""
    truth = item.answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    row = " | ".join([item.question, truth, prediction, ""])
    return prompt + "\n" + row + (RETRY_SUFFIX if retry else "")


def parse_correctness(text: str) -> float | None:
    """The first space-separated token as a score in [0, 1], or None (NaN and inf too: they poison means)."""
    try:
        score = float(text.split(" ")[0].strip())
    except ValueError:
        return None
    return score if math.isfinite(score) and 0.0 <= score <= 1.0 else None


def grade(
    items: Sequence[MMVetItem], predictions: dict[str, str], judge: Judge, prompt: str, runs: int
) -> dict[str, dict[str, list]]:
    """Grades in the official grade-file shape ``{id: {model, content, score}}``, plus per run the
    number of judge calls (``tries``) and whether a score was read (``parsed``) or defaulted to 0.0."""
    grades: dict[str, dict[str, list]] = {
        i.id: {"model": [], "content": [], "score": [], "tries": [], "parsed": []} for i in items
    }
    for run in range(runs):

        def request(item: MMVetItem, attempt: int, run: int = run) -> JudgeRequest:
            message = grader_message(prompt, item, predictions[item.id], retry=attempt > 0)
            return JudgeRequest(
                messages=[{"role": "user", "content": message}],
                temperature=TEMPERATURES[attempt],
                max_tokens=MAX_TOKENS,
                tag={"run": run},
            )

        replies = ask_until_parsed(judge, items, request, parse_correctness, len(TEMPERATURES))
        for item, reply in zip(items, replies):
            parsed = reply.value is not None
            record = grades[item.id]
            record["model"].append(judge.model)
            record["content"].append(reply.text)
            record["score"].append(reply.value if parsed else 0.0)
            record["tries"].append(reply.tries)
            record["parsed"].append(parsed)
    return grades


def aggregate(items: Sequence[MMVetItem], grades: dict[str, dict[str, list]], runs: int) -> dict[str, Any]:
    """Per capability, per capability integration and total, ×100, mean over runs, official rounding."""
    # Capabilities in each item's listed order, not a set's: ties in most_common() stay reproducible.
    counts = Counter(c for item in items for c in dict.fromkeys(item.capabilities))
    integration_counts = Counter(_integration(item) for item in items)
    capability_sums = {c: np.zeros(runs) for c, _ in counts.most_common()}
    integration_sums = {name: np.zeros(runs) for name, _ in integration_counts.most_common()}
    totals = np.zeros(runs)
    for item in items:
        scores = np.asarray(grades[item.id]["score"][:runs], dtype=float)
        for capability in dict.fromkeys(item.capabilities):
            capability_sums[capability] += scores
        integration_sums[_integration(item)] += scores
        totals += scores
    total_runs = totals / len(items) * 100
    return {
        "items": len(items),
        "runs": runs,
        "capabilities": {c: _mean(s / counts[c] * 100) for c, s in capability_sums.items()},
        "total": _mean(total_runs),
        "std": float(np.round(total_runs.std(), DECIMALS)),
        "run_totals": [float(x) for x in np.round(total_runs, DECIMALS)],
        "integrations": {n: _mean(s / integration_counts[n] * 100) for n, s in integration_sums.items()},
        "counts": dict(counts.most_common()),
        "integration_counts": dict(integration_counts.most_common()),
    }


def _integration(item: MMVetItem) -> str:
    """The name of an item's capability set in a fixed order (the official joins a set: its order varies)."""
    return "_".join(c for c in CAPABILITIES if c in item.capabilities)


def _mean(per_run: np.ndarray) -> float:
    # numpy's rounding, as the official script rounds numpy floats (round(np.float64(0.15), 1) == 0.2).
    return float(np.round(per_run.mean(), DECIMALS))


def score(
    items: Sequence[MMVetItem],
    predictions: dict[str, str],
    judge: Judge,
    prompt: str,
    runs: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Grade, aggregate and write the official predictions and grade files; return the metrics."""
    if runs < 1:
        raise EvalError(f"--runs must be 1 or more, got {runs}")
    missing = [i.id for i in items if i.id not in predictions]
    if missing:
        raise EvalError(f"no prediction for MM-Vet items {missing[:5]}; regenerate the answers")
    out_dir.mkdir(parents=True, exist_ok=True)
    common.write_json(out_dir / "predictions.json", {i.id: predictions[i.id] for i in items})
    grades = grade(items, predictions, judge, prompt, runs)
    common.write_json(out_dir / "grades.json", grades)
    metrics = aggregate(items, grades, runs)
    metrics["reasked"] = sum(t > 1 for g in grades.values() for t in g["tries"])
    metrics["scored_zero_unparsable"] = sum(not p for g in grades.values() for p in g["parsed"])
    return metrics
