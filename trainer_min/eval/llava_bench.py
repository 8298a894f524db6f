"""LLaVA-Bench (in-the-wild), scored as LLaVA's eval_gpt_review_bench.py and summarize_gpt_review.py do.

For each question the judge gets the system message below and one user message: the image's
caption as ``[Context]``, the ``[Question]``, GPT-4's reference as Assistant 1, the model as
Assistant 2, and the rule prompt of the question's category (``llava_bench_conv|detail|complex``
in LLaVA's rule.json) under ``[System]``; temperature 0.2. The first line of the review, commas
read as spaces, must split on single spaces into exactly two numbers, else the pair is (-1, -1).
A category's score is mean(model) / mean(reference) × 100 (a ratio of means; each mean rounded to
3 decimals first, the ratio to 1, as the official summary does). Failed pairs stay in the means by
default, as in the official script; ``drop_failed`` leaves them out. Failures are always counted, and a
category whose reviews all failed has no score (the official formula would give -1 / -1 × 100 = 100.0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer_min.eval.answer import Question, image_file
from trainer_min.eval.common import read_jsonl, resource_text, write_jsonl
from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import Judge, JudgeRequest

QUESTIONS_FILE = "questions.jsonl"
CONTEXT_FILE = "context.jsonl"
REFERENCE_FILE = "answers_gpt4.jsonl"
SYSTEM_MESSAGE = "You are a helpful and precise assistant for checking the quality of the answer."
TEMPERATURE = 0.2
MAX_TOKENS = 1024
FAILED = (-1.0, -1.0)


@dataclass(frozen=True)
class LlavaBenchItem:
    question_id: Any
    image: str
    question: str
    category: str
    caption: str
    reference: str
    reference_id: Any

    @property
    def id(self) -> str:
        return str(self.question_id)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalError(
            f"{path} not found: --data must hold LLaVA-Bench in-the-wild "
            f"({QUESTIONS_FILE}, {CONTEXT_FILE}, {REFERENCE_FILE}, images/)"
        )
    return [record for _, record in read_jsonl(path)]


def load_items(data_dir: Path) -> list[LlavaBenchItem]:
    """Questions in file order, each with its caption and GPT-4 reference (matched by question_id)."""
    contexts = {c["image"]: c for c in _read_jsonl(data_dir / CONTEXT_FILE)}
    references = {r["question_id"]: r for r in _read_jsonl(data_dir / REFERENCE_FILE)}
    items = []
    for record in _read_jsonl(data_dir / QUESTIONS_FILE):
        where = f"{data_dir / QUESTIONS_FILE} question {record.get('question_id')!r}"
        try:
            context = contexts[record["image"]]
            reference = references[record["question_id"]]
            category = record["category"]
            text = record["text"]
        except KeyError as err:
            raise EvalError(f"{where}: no {err} for it; check {CONTEXT_FILE} and {REFERENCE_FILE}") from None
        caption = context.get("caption", "")
        # The official joins a list of captions with newlines; a single caption is used as it is.
        caption = "\n".join(caption) if isinstance(caption, list) else str(caption)
        reference_id = reference.get("answer_id", reference["question_id"])
        items.append(
            LlavaBenchItem(
                record["question_id"],
                record["image"],
                text,
                category,
                caption,
                reference["text"],
                reference_id,
            )
        )
    return items


def questions(items: Sequence[LlavaBenchItem], data_dir: Path) -> list[Question]:
    root = data_dir / "images"
    return [
        Question(i.id, i.question, image_file(root, i.image, f"{QUESTIONS_FILE} question {i.id}"))
        for i in items
    ]


def load_rules() -> dict[str, dict[str, str]]:
    return json.loads(resource_text("llava_bench_rule.json"))


def check_categories(items: Sequence[LlavaBenchItem]) -> None:
    """Every question's category has a rule prompt (checked before any answer is generated)."""
    rules = load_rules()
    for item in items:
        if f"llava_bench_{item.category}" not in rules:
            raise EvalError(
                f"{QUESTIONS_FILE} question {item.id}: category {item.category!r} has no rule prompt; "
                "LLaVA-Bench in-the-wild categories are conv, detail and complex"
            )


def review_message(item: LlavaBenchItem, answer: str, rules: dict[str, dict[str, str]]) -> str:
    """The user message of the official layout for one question."""
    key = f"llava_bench_{item.category}"
    if key not in rules:
        raise EvalError(
            f"{QUESTIONS_FILE} question {item.id}: category {item.category!r} has no rule prompt; "
            "LLaVA-Bench in-the-wild categories are conv, detail and complex"
        )
    role, prompt = rules[key]["role"], rules[key]["prompt"]
    return (
        f"[Context]\n{item.caption}\n\n"
        f"[Question]\n{item.question}\n\n"
        f"[{role} 1]\n{item.reference}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
        f"[System]\n{prompt}\n\n"
    )


def parse_score(review: str) -> tuple[float, float] | None:
    """(reference, model) from the first line, or None where the official parser yields (-1, -1)."""
    parts = review.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return None
    try:
        pair = (float(parts[0]), float(parts[1]))
    except ValueError:
        return None
    return pair if all(math.isfinite(x) for x in pair) else None


def aggregate(
    categories: Sequence[str], pairs: Sequence[tuple[float, float] | None], drop_failed: bool
) -> dict:
    """Per category and ``all``: the official ratio of means, the means, and the counts."""
    groups: dict[str, list[int]] = {"all": list(range(len(pairs)))}
    for index, category in enumerate(categories):
        groups.setdefault(category, []).append(index)
    scores = {}
    for name in sorted(groups):
        members = groups[name]
        failures = sum(pairs[i] is None for i in members)
        kept = [pairs[i] or FAILED for i in members if not (drop_failed and pairs[i] is None)]
        entry: dict[str, Any] = {"count": len(kept), "failures": failures}
        if kept and failures < len(members):
            reference, model = (round(x, 3) for x in np.asarray(kept).mean(0).tolist())
            entry.update(
                score=round(model / reference * 100, 1) if reference else None,
                reference_mean=reference,
                model_mean=model,
            )
        else:
            entry.update(score=None, reference_mean=None, model_mean=None)
        scores[name] = entry
    return scores


def score(
    items: Sequence[LlavaBenchItem],
    answers: dict[str, str],
    judge: Judge,
    drop_failed: bool,
    out_dir: Path,
    model_name: str,
) -> dict[str, Any]:
    """Review every answer, write the official answer and review files, return the metrics."""
    rules = load_rules()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(
        out_dir / "answers.jsonl",
        (
            {
                "question_id": item.question_id,
                "prompt": item.question,
                "text": answers[item.id],
                "answer_id": item.id,
                "model_id": model_name,
                "metadata": {},
            }
            for item in items
        ),
    )
    requests = [
        JudgeRequest(
            messages=[
                {"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": review_message(item, answers[item.id], rules)},
            ],
            temperature=TEMPERATURE,
            max_tokens=MAX_TOKENS,
        )
        for item in items
    ]
    reviews = judge.complete(requests)
    pairs = [parse_score(review) for review in reviews]
    write_jsonl(
        out_dir / "reviews.jsonl",
        (
            {
                "id": index,
                "question_id": item.question_id,
                "answer1_id": item.reference_id,
                "answer2_id": item.id,
                "category": f"llava_bench_{item.category}",
                "content": review,
                "tuple": list(pair or FAILED),
            }
            for index, (item, review, pair) in enumerate(zip(items, reviews, pairs), 1)
        ),
    )
    return {
        "items": len(items),
        "drop_failed": drop_failed,
        "failures": sum(p is None for p in pairs),
        "scores": aggregate([i.category for i in items], pairs, drop_failed),
    }
