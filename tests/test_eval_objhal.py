"""Object HalBench: ground truth from tiny COCO 2014 files, CHAIR metrics by hand (Resp. vs CHAIRs
denominators, mentions vs distinct classes), judge extraction against a scripted loopback judge."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from support.eval_data import OBJHAL_QUESTION, build_objhal
from support.servers import ok, scripted_server

from trainer_min.eval import objhal
from trainer_min.eval.judge import Judge

# Ground truth of the fixture: 101 {dog, person}, 102 {cat, remote, couch}, 103 {}, 104 {car}.
ANSWERS = {
    "1": "A man walks a dog near a frisbee. The dog is happy.",  # 4 mentions, frisbee hallucinated
    "2": "A cat sits on a couch.",  # 2 mentions, none hallucinated
    "3": "The picture shows an empty white room with nothing in it.",  # no COCO object
    "4": "There are two cars, a bus and a truck.",  # 3 mentions, bus and truck hallucinated
}


@pytest.fixture
def data(tmp_path):
    return build_objhal(tmp_path / "objhal")


def test_ground_truth_joins_instances_and_captions(data):
    items = objhal.load_items(data)
    truth = objhal.load_ground_truth(data, objhal.coco_vocabulary(), {i.image_id for i in items})
    assert truth == {101: {"dog", "person"}, 102: {"cat", "remote", "couch"}, 103: set(), 104: {"car"}}


def test_rules_chair_metrics_by_hand(data, tmp_path):
    items = objhal.load_items(data)
    metrics = objhal.score(items, ANSWERS, data, tmp_path / "out", "rules", None, "")
    assert (
        metrics["responses"] == 4
        and metrics["coco_responses"] == 3
        and metrics["hallucinated_responses"] == 2
    )
    assert metrics["chair_s"] == pytest.approx(2 / 4 * 100)  # over every response
    assert metrics["resp"] == pytest.approx(2 / 3 * 100)  # over responses naming a COCO object
    assert metrics["mentions"] == 9 and metrics["hallucinated_mentions"] == 3
    assert metrics["obj"] == pytest.approx(3 / 9 * 100)
    # distinct correct classes per response: {person, dog} + {cat, couch} + {} + {car}, over 2 + 3 + 0 + 1.
    assert metrics["recall"] == pytest.approx(5 / 6 * 100)
    assert metrics["extraction_failures"] == 0 and metrics["extract"] == "rules"
    details = json.loads((tmp_path / "out" / "hallucinations.json").read_text())["sentences"]
    assert details[3]["mscoco_hallucinated_words"] == [["bus", "bus"], ["truck", "truck"]]
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert answers[0] == {"image_id": 101, "question": OBJHAL_QUESTION, "answer": ANSWERS["1"]}


class Extractor:
    """Scripted extraction replies keyed by a word of the answer, one list entry per call."""

    replies = {
        "frisbee": ['["man", "dog", "frisbee", "Dogs"]'],
        "couch": ['Here you go:\n```json\n["cat", "couch"]\n```'],
        "cars": ["I cannot tell.", '["car", "bus"]'],
        "giraffe": ["no list here"],
    }

    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        text = body["messages"][0]["content"]
        key = next(k for k in self.replies if k in text)
        with self.lock:
            self.bodies.append(body)
            self.calls[key] += 1
            options = self.replies[key]
            return ok(options[min(self.calls[key], len(options)) - 1])


def test_judge_extraction_retries_skips_short_answers_and_counts_failures(data, tmp_path):
    items = objhal.load_items(data)
    answers = {
        "1": ANSWERS["1"],
        "2": ANSWERS["2"],
        "3": "An empty room.",  # three words: an empty list without a call
        "4": ANSWERS["4"],
    }
    extra = objhal.ObjHalItem("5", 103, OBJHAL_QUESTION, None)
    answers["5"] = "A tall giraffe stands in the room."  # the judge never answers with a list
    extractor = Extractor()
    prompt = "Q: {question}\nA: {answer}\nList the objects."
    with scripted_server(extractor) as server:
        judge = Judge("scripted", tmp_path / "cache.jsonl", base_url=server.url)
        try:
            metrics = objhal.score([*items, extra], answers, data, tmp_path / "out", "judge", judge, prompt)
        finally:
            judge.close()
    assert extractor.calls == {"frisbee": 1, "couch": 1, "cars": 2, "giraffe": objhal.EXTRACT_TRIES}
    # Calls run concurrently, so find the one about response 1 by its text rather than by arrival order.
    first = next(b for b in extractor.bodies if "frisbee" in b["messages"][0]["content"])
    assert first["messages"][0]["role"] == "system"
    assert first["messages"][0]["content"] == f"Q: {OBJHAL_QUESTION}\nA: {answers['1']}\nList the objects."
    assert first["temperature"] == 0.2 and first["max_tokens"] == 512
    # Response 1: distinct names man, dog, frisbee; response 4 as extracted on the retry: car, bus.
    assert metrics["extraction_failures"] == 1 and metrics["responses"] == 4
    assert metrics["mentions"] == 3 + 2 + 0 + 2 and metrics["hallucinated_mentions"] == 2
    assert metrics["resp"] == pytest.approx(2 / 3 * 100) and metrics["chair_s"] == pytest.approx(2 / 4 * 100)
    details = json.loads((tmp_path / "out" / "hallucinations.json").read_text())["sentences"]
    assert details[0]["extracted"] == ["man", "dog", "frisbee", "Dogs"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('["a", "b"]', ["a", "b"]),
        ("[]", []),
        ('Sure:\n```json\n["cup"]\n```', ["cup"]),
        ('The objects are:\n["cup", "dog"]', ["cup", "dog"]),
        ('{"objects": ["cup"]}', None),
        ("cup, dog", None),
    ],
)
def test_parse_object_list(text, expected):
    assert objhal.parse_object_list(text) == expected


def test_images_from_files_when_the_record_has_no_base64(tmp_path):
    data = build_objhal(tmp_path / "objhal", with_base64=False)
    items = objhal.load_items(data)
    [first, *_] = objhal.questions(items, data)
    assert first.image().size == (48, 40)
    with_base64 = build_objhal(tmp_path / "objhal64")
    assert objhal.questions(objhal.load_items(with_base64), with_base64)[0].image().size == (48, 40)


def test_image_outside_val2014_is_refused(data, tmp_path):
    items = [*objhal.load_items(data), objhal.ObjHalItem("9", 555, OBJHAL_QUESTION, None)]
    with pytest.raises(objhal.EvalError, match="555.*val2014"):
        objhal.score(items, {**ANSWERS, "9": "a dog"}, data, tmp_path / "out", "rules", None, "")


def test_missing_annotations_say_what_to_download(data, tmp_path):
    (data / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(objhal.EvalError, match="captions_val2014.json.*annotations_trainval2014.zip"):
        objhal.score(objhal.load_items(data), ANSWERS, data, tmp_path / "out", "rules", None, "")
