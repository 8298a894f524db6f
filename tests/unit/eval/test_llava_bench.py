"""LLaVA-Bench in-the-wild against a scripted judge: the official message layout, the first-line
parser, (-1, -1) failures kept or dropped, and the ratio of means per category and overall."""

from __future__ import annotations

import json
import re

import pytest
from support.eval_data import LLAVA_QUESTIONS, build_llava_bench
from support.servers import ok, scripted_server

from trainer_min.eval import llava_bench
from trainer_min.eval.judge import Judge

ANSWERS = {str(q): f"model answer {q}" for q, *_ in LLAVA_QUESTIONS}
# (reference, model) per question: conv 8/6, detail 7/7, complex 9/3, conv unparsable.
REVIEWS = {
    "0": "8 6\nAssistant 1 is better.",
    "1": "7,7\nBoth fine.",
    "2": "9 3\nWeak.",
    "3": "I rate them well.",
}


def review_for(body: dict):
    question = re.search(r"\[Question\]\nQ(\d):", body["messages"][1]["content"]).group(1)
    return ok(REVIEWS[question])


@pytest.fixture
def data(tmp_path):
    return build_llava_bench(tmp_path / "llava-bench")


def score(data, tmp_path, url, drop_failed=False, name="out"):
    judge = Judge("scripted", tmp_path / "cache.jsonl", base_url=url)
    try:
        items = llava_bench.load_items(data)
        return llava_bench.score(items, ANSWERS, judge, drop_failed, tmp_path / name, "smoke")
    finally:
        judge.close()


def test_message_layout_and_sampling(data, tmp_path):
    with scripted_server(review_for) as server:
        score(data, tmp_path, server.url)
    first = next(c.body for c in server.calls if "Q0:" in c.body["messages"][1]["content"])
    prompt = llava_bench.load_rules()["llava_bench_conv"]["prompt"]
    assert first["messages"][0] == {
        "role": "system",
        "content": "You are a helpful and precise assistant for checking the quality of the answer.",
    }
    # A list of captions is joined with newlines; GPT-4's reference is Assistant 1, the model Assistant 2.
    assert first["messages"][1] == {
        "role": "user",
        "content": "[Context]\nA red square beside a disc.\nTwo simple shapes on white.\n\n"
        "[Question]\nQ0: what colour is the square?\n\n"
        "[Assistant 1]\nThe square is red.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nmodel answer 0\n\n[End of Assistant 2]\n\n"
        f"[System]\n{prompt}\n\n",
    }
    assert first["temperature"] == 0.2 and first["max_tokens"] == 1024
    detail = next(c.body for c in server.calls if "Q1:" in c.body["messages"][1]["content"])
    assert llava_bench.load_rules()["llava_bench_detail"]["prompt"] in detail["messages"][1]["content"]
    single_caption = next(c.body for c in server.calls if "Q2:" in c.body["messages"][1]["content"])
    assert single_caption["messages"][1]["content"].startswith(
        "[Context]\nA blue square and an orange disc.\n\n"
    )


@pytest.mark.parametrize(
    "review, expected",
    [
        ("8 6\nbecause", (8.0, 6.0)),
        ("7,9", (7.0, 9.0)),
        ("8.5 7", (8.5, 7.0)),
        ("8, 6", None),  # the comma becomes a space: three parts, as the official parser sees it
        ("Scores: 8 6", None),
        ("8 6 ", None),
        ("8\n6", None),
        ("eight six", None),
    ],
)
def test_parser_takes_exactly_two_numbers_from_the_first_line(review, expected):
    assert llava_bench.parse_score(review) == expected


def test_ratio_of_means_with_failures_kept_as_minus_one(data, tmp_path):
    with scripted_server(review_for) as server:
        metrics = score(data, tmp_path, server.url)
    scores = metrics["scores"]
    assert metrics["failures"] == 1
    assert scores["conv"] == {
        "count": 2,
        "failures": 1,
        "score": 71.4,
        "reference_mean": 3.5,
        "model_mean": 2.5,
    }
    assert scores["detail"]["score"] == 100.0 and scores["complex"]["score"] == 33.3
    # all: mean(6, 7, 3, -1) / mean(8, 7, 9, -1) = 3.75 / 5.75; the mean of the category ratios would be 68.2.
    assert scores["all"]["score"] == 65.2 and scores["all"]["failures"] == 1
    reviews = [json.loads(line) for line in (tmp_path / "out" / "reviews.jsonl").read_text().splitlines()]
    assert [r["tuple"] for r in reviews] == [[8.0, 6.0], [7.0, 7.0], [9.0, 3.0], [-1.0, -1.0]]
    assert reviews[0]["category"] == "llava_bench_conv" and reviews[0]["answer1_id"] == "ref0"


def test_drop_failed_leaves_failures_out_but_still_counts_them(data, tmp_path):
    with scripted_server(review_for) as server:
        metrics = score(data, tmp_path, server.url, drop_failed=True)
    scores = metrics["scores"]
    assert (
        scores["conv"]["score"] == 75.0 and scores["conv"]["count"] == 1 and scores["conv"]["failures"] == 1
    )
    # mean(6, 7, 3) / mean(8, 7, 9), each mean rounded to 3 decimals first: 5.333 / 8.0.
    assert scores["all"]["score"] == 66.7 and scores["all"]["model_mean"] == 5.333
    assert metrics["failures"] == 1 and metrics["drop_failed"] is True


def test_writes_answers_in_llava_format(data, tmp_path):
    with scripted_server(review_for) as server:
        score(data, tmp_path, server.url)
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert [(a["question_id"], a["text"]) for a in answers] == [
        (q, f"model answer {q}") for q, *_ in LLAVA_QUESTIONS
    ]


def test_missing_reference_names_the_question(data):
    lines = (data / "answers_gpt4.jsonl").read_text().splitlines()
    (data / "answers_gpt4.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(llava_bench.EvalError, match="question 3"):
        llava_bench.load_items(data)


def test_a_line_that_is_not_json_names_file_and_line(data):
    lines = (data / "questions.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-1]  # a truncated record
    (data / "questions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(llava_bench.EvalError, match=r"questions.jsonl line 3: not valid JSON"):
        llava_bench.load_items(data)
