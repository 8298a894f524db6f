"""The object diff: what a rejected answer adds and drops, read as Object HalBench reads objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo_data.coco_objects import coco_vocabulary
from bpo_data.verify.objects import object_diff, objects

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("chosen", "rejected", "added", "removed"),
    [
        (
            "A dog plays with a ball in the park.",
            "A dog plays with a frisbee in the park.",
            ["frisbee"],
            ["sports ball"],
        ),
        ("Two dogs sit on a couch.", "Two dogs sit on a couch next to a cat.", ["cat"], []),
        ("A man rides a bike.", "A man rides a bike.", [], []),
        ("A teddy bear sits on the bed.", "A bear sits on the bed.", ["bear"], ["teddy bear"]),
        ("The toilet seat is up.", "The seat is up.", ["chair"], ["toilet"]),
        ("A hot dog on a plate. The dog is happy.", "A dog on a plate.", [], ["hot dog"]),
        ("Three cups on the table.", "There is nothing else.", [], ["cup", "dining table"]),
    ],
)
def test_hand_written_pairs(chosen, rejected, added, removed):
    diff = object_diff(chosen, rejected)
    assert (diff.added, diff.removed) == (added, removed)


def test_a_toilet_anywhere_in_the_text_silences_a_seat_in_another_sentence():
    assert objects("There is a toilet. Next to it is a seat.") == {"toilet"}


def test_piecewise_reading_equals_the_official_reader_on_shipped_texts():
    vocabulary = coco_vocabulary()
    texts = []
    for name in ("bpo_data/world/sample/sharegptv.json", "bpo_data/world/sample/llava_instruct.json"):
        for record in json.loads((REPO / name).read_text("utf-8")):
            texts += [turn["value"] for turn in record["conversations"]]
    texts += [
        "Mr. Smith holds a baby bird. A passenger train! Is that a hot dog? A wine glass.\nA bow tie.",
        "A man in a suit rides a motorbike past two teddy bears; a cellphone and a laptop lie on a desk.",
        "The kitchen has a refrigerator, an oven and a microwave. Donuts sit beside the sink.",
        "Skiers and a snowboarder stand near the ski lift, holding their skis and poles.",
        "A giraffe and zebras graze while an airplane flies over the fire hydrant by the road.",
    ]
    assert texts
    for text in texts:
        assert objects(text) == vocabulary.objects(text), text
