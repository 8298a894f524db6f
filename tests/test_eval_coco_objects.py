"""The rule-based COCO object extractor (CHAIR rules) on hand-made captions."""

from __future__ import annotations

import pytest

from bpo_data.coco_objects import coco_vocabulary
from trainer_min.eval.objhal import ground_truth


@pytest.fixture(scope="module")
def vocab():
    return coco_vocabulary()


def classes(vocab, text: str) -> list[str]:
    return [m.cls for m in vocab.mentions(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two dogs chase three cats.", ["dog", "cat"]),  # plurals
        ("Knives and forks lie beside the buses.", ["knife", "fork", "bus"]),  # irregular, and "bus" kept
        ("A man and two women talk to the children.", ["person", "person", "person"]),  # synonyms
        ("A puppy sleeps next to a kitten on the sofa.", ["dog", "cat", "couch"]),
        ("He eats hot dogs beside a teddy bear.", ["hot dog", "teddy bear"]),  # two-word objects
        ("Her cell phone is on the tennis rackets.", ["cell phone", "tennis racket"]),
        ("The toilet seat is up.", ["toilet"]),
        ("A seat stands next to the toilet.", ["toilet"]),  # a toilet's seat is not a chair
        ("A seat stands in the corner.", ["chair"]),
        ("A baby elephant follows a passenger train.", ["elephant", "train"]),  # not a person
        ("He wears a bow tie.", ["tie"]),
        ("A hot, dog-friendly cafe with a dog.", ["dog"]),  # punctuation and hyphens keep words apart
        ("Skis lean on a TV near two remotes.", ["skis", "tv", "remote"]),
    ],
)
def test_classes_named_in_captions(vocab, text, expected):
    assert classes(vocab, text) == expected


def test_every_occurrence_is_a_mention(vocab):
    assert [(m.word, m.cls) for m in vocab.mentions("A dog chases another dog past a dog.")] == [
        ("dog", "dog")
    ] * 3


def test_judge_names_count_once_per_distinct_name(vocab):
    found = vocab.mentions_in_names(
        ["Dogs", "dog", "men", "woman", "hot dog", "coffee table", "wooden spoon"]
    )
    assert [(m.word, m.cls) for m in found] == [
        ("dog", "dog"),
        ("man", "person"),
        ("woman", "person"),
        ("hot dog", "hot dog"),
        ("coffee table", "dining table"),
    ]


def test_toilet_seat_rule_applies_to_judge_names(vocab):
    assert [m.cls for m in vocab.mentions_in_names(["toilet", "seat"])] == ["toilet"]


def test_ground_truth_is_instances_union_caption_objects(vocab):
    instances = {
        "categories": [
            {"id": 18, "name": "dog"},
            {"id": 62, "name": "chair"},
            {"id": 67, "name": "dining table"},
        ],
        "annotations": [
            {"image_id": 1, "category_id": 18},
            {"image_id": 1, "category_id": 67},
            {"image_id": 2, "category_id": 62},
            {"image_id": 99, "category_id": 62},
        ],
    }
    captions = {
        "annotations": [
            {"image_id": 1, "caption": "A man feeds his puppy at the table."},
            {"image_id": 2, "caption": "Two cats sit on a wooden bench."},
            {"image_id": 3, "caption": "Nothing here."},
        ]
    }
    assert ground_truth(vocab, instances, captions, [1, 2, 3]) == {
        1: {"dog", "dining table", "person"},
        2: {"chair", "cat", "bench"},
        3: set(),
    }
