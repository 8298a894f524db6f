"""The object diff: what a rejected answer adds and drops, read as Object HalBench reads objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo_data.coco_objects import coco_vocabulary
from bpo_data.verify.objects import claims, claims_added, object_diff, objects

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


@pytest.mark.parametrize(
    ("question", "chosen", "rejected", "added"),
    [
        # a reworded truth states nothing new: the subject comes from the question
        ("What colour is the person?", "Brown.", "The person is brown.", []),
        ("Where is the table?", "In the lower part of the image.", "The table is at the bottom.", []),
        ("Which part holds the clock?", "In the centre.", "The clock is in the middle.", []),
        # a wrong attribute, count, place, size or sign text is a new claim
        ("What colour is the bus?", "The bus is green.", "The bus is red.", ["colour:red"]),
        ("How many cups are there?", "Two.", "There are three cups.", ["count:3"]),
        ("What is on the left?", "A cup.", "A dog.", ["object:dog"]),
        ("What is on the left?", "A cup.", "A cup on the right.", ["place:right"]),
        ("Is the bus big or small?", "The bus is small.", "The bus is large.", ["size:large"]),
        ("What does the sign say?", "It says OPEN.", "It says CAFE.", ["text:CAFE"]),
        # a denial claims nothing, so swapping one denied object for another adds nothing
        ("Is there a cup?", "No, I cannot see a cup.", "No, I cannot see a bed.", []),
        ("Describe it.", "A dog on grass.", "A dog on grass. There is no ball.", []),
        ("Describe it.", "A dog on grass.", "A dog and a ball on grass.", ["object:sports ball"]),
    ],
)
def test_claims_added_on_hand_written_pairs(question, chosen, rejected, added):
    assert claims_added(chosen, rejected, question) == added


def test_claims_are_normalised_kind_and_value():
    assert claims("Two big grey buses wait in the middle of the picture; 7 is written on a sign.") == {
        "count:2", "size:large", "colour:grey", "object:bus", "place:centre", "count:7"
    }  # fmt: skip
    assert claims("Three gray cars.") == claims("3 grey cars.") == {"count:3", "colour:grey", "object:car"}
