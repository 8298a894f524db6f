"""MM-Vet scoring against a scripted loopback judge: the grader message, the retry ladder, the
per-capability / integration / total aggregation, runs with population std, the official files."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict

import pytest
from support.eval_data import build_mmvet
from support.servers import error, ok, scripted_server

from trainer_min.eval import mmvet
from trainer_min.eval.judge import Judge

PREDICTIONS = {f"v1_{i}": f"prediction {i}" for i in range(5)}


def item_of(body: dict) -> str:
    """Which fixture item a grader request is about (its question starts with Q<n>:)."""
    return "v1_" + re.search(r"Q(\d):", body["messages"][-1]["content"]).group(1)


class Scripted:
    """Replies per item from a list (one entry per call for that item); records every call."""

    def __init__(self, replies: dict[str, list[str]]):
        self.replies = replies
        self.seen: dict[str, list[dict]] = defaultdict(list)
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        key = item_of(body)
        with self.lock:
            calls = self.seen[key]
            calls.append(body)
            options = self.replies[key]
            return ok(options[min(len(calls) - 1, len(options) - 1)])


@pytest.fixture
def items(tmp_path):
    return mmvet.load_items(build_mmvet(tmp_path / "mm-vet"))


def judge_at(url: str, tmp_path) -> Judge:
    return Judge("scripted", tmp_path / "cache.jsonl", base_url=url)


def run_score(items, url, tmp_path, runs=1, prompt=None):
    judge = judge_at(url, tmp_path)
    try:
        return mmvet.score(
            items, PREDICTIONS, judge, prompt or mmvet.load_prompt(None), runs, tmp_path / "out"
        )
    finally:
        judge.close()


def test_capabilities_integrations_and_total_from_hand_computed_scores(items, tmp_path):
    # v1_0 rec | v1_1 rec,ocr | v1_2 ocr,math | v1_3 know,gen,rec | v1_4 rec,ocr
    script = Scripted({"v1_0": ["1.0"], "v1_1": ["0.5"], "v1_2": ["0.0"], "v1_3": ["0.8"], "v1_4": ["0.3"]})
    with scripted_server(script) as server:
        metrics = run_score(items, server.url, tmp_path)
    # rec: (1.0 + 0.5 + 0.8 + 0.3) / 4; ocr: (0.5 + 0.0 + 0.3) / 3; an item counts fully in each capability.
    assert metrics["capabilities"] == {"rec": 65.0, "ocr": 26.7, "math": 0.0, "know": 80.0, "gen": 80.0}
    assert list(metrics["capabilities"])[:2] == ["rec", "ocr"]  # most frequent first, as the official table
    assert metrics["total"] == 52.0  # 2.6 / 5, not the mean of the capability scores
    assert metrics["integrations"] == {"rec_ocr": 40.0, "rec": 100.0, "ocr_math": 0.0, "rec_know_gen": 80.0}
    assert list(metrics["integrations"])[0] == "rec_ocr"  # the integration with most items first
    assert metrics["std"] == 0.0 and metrics["run_totals"] == [52.0]
    assert metrics["reasked"] == 0 and metrics["scored_zero_unparsable"] == 0


def test_grader_message_and_sampling_follow_the_official_layout(items, tmp_path):
    prompt_file = tmp_path / "official.txt"
    prompt_file.write_text(
        "OFFICIAL PROMPT\nQuestion | Ground truth | Prediction | Correctness\n", encoding="utf-8"
    )
    script = Scripted({key: ["0.5"] for key in PREDICTIONS})
    with scripted_server(script) as server:
        run_score(items, server.url, tmp_path, prompt=mmvet.load_prompt(prompt_file))
    [body] = script.seen["v1_2"]
    assert body["messages"] == [
        {
            "role": "user",
            "content": "OFFICIAL PROMPT\nQuestion | Ground truth | Prediction | Correctness\n\n"
            "Q2: what is x in the equation? | -1 <AND> -5 | prediction 2 | ",
        }
    ]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 3


def test_default_prompt_is_the_official_few_shot_text(items, tmp_path):
    prompt = mmvet.load_prompt(None)
    assert prompt.startswith(
        "Compare the ground truth and prediction from AI models, to give a correctness score"
    )
    rows = [line for line in prompt.splitlines() if line.count(" | ") == 3]
    worked = rows[2:]  # after the header and the --- line
    assert len(worked) == 7 and sum("-1 <AND> -5" in row for row in worked) == 5
    assert "What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5" in worked
    assert sum("Iceland and Greenland" in row for row in worked) == 2
    script = Scripted({key: ["0.5"] for key in PREDICTIONS})
    with scripted_server(script) as server:
        run_score(items, server.url, tmp_path)
    [body] = script.seen["v1_0"]
    # The official string ends in a newline and the evaluator adds one more before the item's row.
    assert body["messages"][0]["content"].endswith(
        "actual physical characteristics. | 1.0\n\nQ0: what animal is shown? | cat | prediction 0 | "
    )


@pytest.mark.parametrize(
    "text, expected",
    [("0.7", 0.7), ("1.0 correct", 1.0), ("0", 0.0), ("1.5", None), ("-0.1", None), (" 0.5", None)]
    + [("0.5,", None), ("nan", None), ("Correctness: 0.5", None)],
)
def test_parse_reads_only_the_first_space_separated_token(text, expected):
    assert mmvet.parse_correctness(text) == expected


def test_retry_ladder_reasks_with_suffix_and_rising_temperature_then_scores_zero(items, tmp_path):
    script = Scripted(
        {
            "v1_0": ["Sure!"],  # never parsable: five tries, then 0.0
            "v1_1": ["The answer", "1.7", "0.9"],  # parsable on the third try
            "v1_2": ["0.0"],
            "v1_3": ["0.8"],
            "v1_4": ["0.3"],
        }
    )
    with scripted_server(script) as server:
        metrics = run_score(items, server.url, tmp_path)
    never = script.seen["v1_0"]
    assert [c["temperature"] for c in never] == [0.0, 0.0, 0.5, 1.0, 1.5]
    suffixed = [c["messages"][0]["content"].endswith(mmvet.RETRY_SUFFIX) for c in never]
    assert suffixed == [False, True, True, True, True]
    assert [c["temperature"] for c in script.seen["v1_1"]] == [0.0, 0.0, 0.5]
    grades = json.loads((tmp_path / "out" / "grades.json").read_text())
    assert (
        grades["v1_0"]["score"] == [0.0]
        and grades["v1_0"]["tries"] == [5]
        and grades["v1_0"]["parsed"] == [False]
    )
    assert grades["v1_1"]["score"] == [0.9] and grades["v1_1"]["tries"] == [3]
    assert grades["v1_1"]["model"] == ["scripted"] and grades["v1_1"]["content"] == ["0.9"]
    assert metrics["reasked"] == 2 and metrics["scored_zero_unparsable"] == 1
    assert metrics["total"] == 40.0  # (0 + 0.9 + 0 + 0.8 + 0.3) / 5


def test_runs_give_the_mean_and_population_std_of_the_totals(items, tmp_path):
    script = Scripted({key: ["0.2", "0.5", "0.8"] for key in PREDICTIONS})
    with scripted_server(script) as server:
        metrics = run_score(items, server.url, tmp_path, runs=3)
    assert metrics["run_totals"] == [20.0, 50.0, 80.0]
    assert metrics["total"] == 50.0
    assert metrics["std"] == 24.5  # population std; the sample std would be 30.0
    assert metrics["capabilities"]["math"] == 50.0
    assert all(len(calls) == 3 for calls in script.seen.values())  # runs are separate calls, not cache hits


def test_writes_the_official_predictions_file(items, tmp_path):
    script = Scripted({key: ["1.0"] for key in PREDICTIONS})
    with scripted_server(script) as server:
        run_score(items, server.url, tmp_path)
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == PREDICTIONS


def test_a_rerun_makes_no_call_and_gives_identical_numbers(items, tmp_path):
    script = Scripted(
        {"v1_0": ["x", "0.6"], "v1_1": ["0.5"], "v1_2": ["0.0"], "v1_3": ["0.8"], "v1_4": ["0.3"]}
    )
    with scripted_server(script) as server:
        first = run_score(items, server.url, tmp_path, runs=2)
    with scripted_server([error(500)]) as down:
        second = run_score(items, down.url, tmp_path, runs=2)
        assert down.calls == []
    assert second == first


def test_unknown_capability_names_the_record(tmp_path):
    root = build_mmvet(tmp_path / "mm-vet")
    data = json.loads((root / "mm-vet.json").read_text())
    data["v1_3"]["capability"] = ["rec", "reasoning"]
    (root / "mm-vet.json").write_text(json.dumps(data))
    with pytest.raises(mmvet.EvalError, match="v1_3.*reasoning"):
        mmvet.load_items(root)
