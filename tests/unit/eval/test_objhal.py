"""Object HalBench: ground truth from tiny COCO 2014 files, CHAIR metrics by hand (Resp. vs CHAIRs
denominators, mentions vs distinct classes) for each way the official count differs from a naive one,
judge extraction against a scripted loopback judge, the official prompt."""

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

# COCO ids of the classes the official-count fixture uses.
CATEGORIES = {1: "person", 3: "car", 17: "cat", 18: "dog", 70: "toilet", 86: "vase"}
# image_id: (instances, captions). Ground truth as the official reader reads it: the captions' "men"
# and "vases" are not read, so 201 is {dog} (no person) and 202 is {cat, vase} (from the instances).
OFFICIAL_IMAGES = {
    201: ([18], ["Two men walk a dog.", "A dog on a leash."]),
    202: ([17, 86], ["A cat beside two vases."]),
    203: ([3], ["A red car parked by the road."]),
    204: ([], ["An empty white room."]),
    205: ([70], ["A toilet seat is up in the bathroom."]),
}
OFFICIAL_ANSWERS = {
    "1": "A man walks a dog. Two men smile.",  # person (hallucinated: the captions' men are not read), dog
    "2": "A cat sits near two vases and some hairdryers.",  # cat; WordNet reads neither plural
    "3": "Smartphones lie on the red car next to a bow tie.",  # car, tie (hallucinated); no phone
    "4": "An empty room.",  # no COCO object: outside Resp.'s denominator
    "5": "The seat of the toilet is up; a dog/cat toy lies there.",  # toilet; seat dropped; dog/cat one token
}


@pytest.fixture
def data(tmp_path):
    return build_objhal(tmp_path / "objhal")


@pytest.fixture
def official_data(tmp_path):
    return build_objhal(tmp_path / "official", images=OFFICIAL_IMAGES, categories=CATEGORIES)


def test_rules_count_as_the_official_reader_by_hand(official_data, tmp_path):
    items = objhal.load_items(official_data)
    truth = objhal.load_ground_truth(official_data, objhal.coco_vocabulary(), {i.image_id for i in items})
    assert truth == {201: {"dog"}, 202: {"cat", "vase"}, 203: {"car"}, 204: set(), 205: {"toilet"}}
    metrics = objhal.score(items, OFFICIAL_ANSWERS, official_data, tmp_path / "out", "rules", None, "")
    details = json.loads((tmp_path / "out" / "hallucinations.json").read_text())["sentences"]
    assert [d["mscoco_generated_words"] for d in details] == [
        [["man", "person"], ["dog", "dog"]],
        [["cat", "cat"]],
        [["car", "car"], ["tie", "tie"]],
        [],
        [["toilet", "toilet"]],
    ]
    assert (metrics["responses"], metrics["coco_responses"], metrics["hallucinated_responses"]) == (5, 4, 2)
    assert metrics["chair_s"] == pytest.approx(2 / 5 * 100)  # over every response
    assert metrics["resp"] == pytest.approx(2 / 4 * 100)  # over the 4 responses naming a COCO object
    assert (metrics["mentions"], metrics["hallucinated_mentions"]) == (6, 2)
    assert metrics["obj"] == pytest.approx(2 / 6 * 100)
    # Distinct correct classes {dog} + {cat} + {car} + {} + {toilet} over ground truth 1 + 2 + 1 + 0 + 1.
    assert metrics["recall"] == pytest.approx(4 / 5 * 100)
    assert metrics["reader"] == objhal.RULES_READER == metrics["truth_reader"]


class OfficialJudge:
    """Extraction replies for the official-count fixture, keyed by a word of the response."""

    replies = {
        "smile": '["two men", "dog", "leash"]',
        "hairdryers": '["cat", "vases", "hairdryers"]',
        "Smartphones": 'Here:\n```json\n["parked car", "red car", "a man\'s hat", "plate with food"]\n```',
        "toilet": '["toilet", "seat", "dog"]',
    }

    def __init__(self):
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        text = body["messages"][0]["content"]
        key = next(k for k in self.replies if k in text)
        with self.lock:
            self.asked.append(key)
        return ok(self.replies[key])


def test_judge_names_count_as_the_official_post_processing_by_hand(official_data, tmp_path):
    items = objhal.load_items(official_data)
    judge_replies = OfficialJudge()
    with scripted_server(judge_replies) as server:
        judge = Judge("scripted", tmp_path / "cache.jsonl", base_url=server.url)
        try:
            metrics = objhal.score(
                items,
                OFFICIAL_ANSWERS,
                official_data,
                tmp_path / "out",
                "judge",
                judge,
                objhal.load_prompt(None),
            )
        finally:
            judge.close()
    assert sorted(judge_replies.asked) == sorted(OfficialJudge.replies)  # "An empty room." was not sent
    details = json.loads((tmp_path / "out" / "hallucinations.json").read_text())["sentences"]
    assert [d["objects"] for d in details] == [
        ["man", "dog", "leash"],
        ["cat", "vase", "hairdryer"],
        ["car", "man", "hat", "plate", "food"],  # "car" once: objects are deduplicated per response
        [],
        ["toilet", "seat", "dog"],
    ]
    assert [[cls for _, cls in d["mscoco_hallucinated_words"]] for d in details] == [
        ["person"],
        ["hair drier"],
        ["person"],
        [],
        ["dog"],  # and no chair: the seat goes with the toilet
    ]
    assert (metrics["responses"], metrics["coco_responses"], metrics["hallucinated_responses"]) == (5, 4, 4)
    assert metrics["chair_s"] == pytest.approx(4 / 5 * 100) and metrics["resp"] == pytest.approx(100.0)
    assert (metrics["mentions"], metrics["hallucinated_mentions"]) == (2 + 3 + 2 + 0 + 2, 4)
    assert metrics["obj"] == pytest.approx(4 / 9 * 100)
    assert metrics["recall"] == pytest.approx(5 / 5 * 100)  # dog, cat + vase, car, toilet
    assert metrics["reader"] == objhal.NAMES_READER


def test_the_scored_response_drops_assistant_as_the_official_loader(official_data, tmp_path):
    items = objhal.load_items(official_data)[:1]
    metrics = objhal.score(
        items, {"1": "Assistant: a dog."}, official_data, tmp_path / "out", "rules", None, ""
    )
    details = json.loads((tmp_path / "out" / "hallucinations.json").read_text())["sentences"]
    assert details[0]["caption"] == "a dog." and metrics["avg_length"] == 2


def test_default_extraction_prompt_is_rlhf_vs(tmp_path):
    prompt = objhal.load_prompt(None)
    assert prompt.startswith(
        "You are an expert in image objects extraction according to a question answer pair."
    )
    assert "[Start of Question]\n\n<image> {question}\n\n[End of Question]" in prompt
    assert "[Start of Examiner's Answer]\n\n{answer}\n\n[End of Examiner's Answer]" in prompt
    assert prompt.endswith("5. You should return an empty JSON list () if no visible objects can be found.\n")
    bare = objhal.load_prompt(None, objhal.NO_IMAGE_TAG)
    assert "<image>" not in bare and bare == prompt.replace("<image> {question}", "{question}")
    own = tmp_path / "mine.txt"
    own.write_text("Q {question} A {answer}", encoding="utf-8")
    assert objhal.load_prompt(own, objhal.NO_IMAGE_TAG) == "Q {question} A {answer}"
    with pytest.raises(objhal.EvalError, match="--objhal-prompt"):
        objhal.load_prompt(None, "mine")


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
