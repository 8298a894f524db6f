"""COCO objects read as Object HalBench's official scorer reads them: WordNet's plurals, the two-word
merges and special cases, the judge-name post-processing, the ground truth."""

from __future__ import annotations

import pytest

from bpo_data.coco_objects import tokens
from trainer_min.eval.objhal import ground_truth


def read(vocab, text: str) -> list[tuple[str, str]]:
    return [(m.word, m.cls) for m in vocab.mentions(text)]


@pytest.mark.parametrize(
    "word, lemma",
    [
        ("dogs", "dog"),
        ("women", "woman"),  # noun.exc
        ("men", "men"),  # "men" is itself a WordNet noun; both forms are three letters, the first wins
        ("vases", "vas"),  # "vas" and "vase" are both nouns: the shortest wins
        ("hairdryers", "hairdryers"),  # not in WordNet: left as it is
        ("smartphones", "smartphones"),
        ("teddybears", "teddybears"),
        ("skis", "ski"),
        ("glasses", "glass"),
        ("busses", "bus"),  # noun.exc
        ("scissors", "scissors"),
        ("dogss", "dog"),  # nltk 3.8.1 rewrites again when the first rewrites are not nouns
    ],
)
def test_wordnet_lemmas_as_nltk_381_gives_them(vocab, word, lemma):
    assert vocab.nouns.lemmatize(word) == lemma


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two dogs chase three cats.", [("dog", "dog"), ("cat", "cat")]),
        ("Two men and two women.", [("woman", "person")]),  # "men" names no one
        ("Vases and hairdryers beside smartphones.", []),  # none of these plurals is read
        (
            "A vase, a hairdryer, a smartphone.",
            [("vase", "vase"), ("hairdryer", "hair drier"), ("smartphone", "cell phone")],
        ),
        ("A dog/cat toy.", []),  # one token, not a COCO word
        ("The skis lean on the wall.", [("ski", "skis")]),
        (
            "A man eats hot dogs beside a teddy bear.",
            [("man", "person"), ("hot dog", "hot dog"), ("teddy bear", "teddy bear")],
        ),
        ("Two wine glasses and a cell phone.", [("wine glass", "wine glass"), ("cell phone", "cell phone")]),
        ("A baby elephant and an adult giraffe.", [("elephant", "elephant"), ("giraffe", "giraffe")]),
        ("A passenger jet over a passenger train.", [("jet", "airplane"), ("train", "train")]),
        ("He wears a bow tie.", [("tie", "tie")]),
        ("The toilet seat is up.", [("toilet", "toilet")]),
        ("A seat stands next to the toilet.", [("toilet", "toilet")]),  # a toilet's seat is not a chair
        ("A seat stands in the corner.", [("seat", "chair")]),
        ("The runner reaches home plate.", []),
        ("The train track runs past a dog.", [("dog", "dog")]),  # the track names no train
        ("A dog. A cat.", [("dog", "dog"), ("cat", "cat")]),  # a sentence's final period splits off
        ("The man's dog.", [("man", "person"), ("dog", "dog")]),
        ("A hot, dog-friendly cafe with a dog.", [("dog", "dog")]),
        ("Mr. Smith and a dog.", [("dog", "dog")]),
    ],
)
def test_free_text_reading(vocab, text, expected):
    assert read(vocab, text) == expected


def test_every_occurrence_is_a_mention(vocab):
    assert read(vocab, "A dog chases another dog past a dog.") == [("dog", "dog")] * 3


def test_two_word_names_merge_left_to_right(vocab):
    # "teddy bear" is merged first, so the following "bear" stands alone.
    assert vocab.merge_double_words(["teddy", "bear", "bear"]) == (["teddy bear", "bear"], ["teddy bear"])
    assert vocab.merge_double_words(["baby", "dog", "cat"]) == (["dog", "cat"], ["dog"])


@pytest.mark.parametrize(
    "text, expected",
    [
        # nltk 3.8.1's word tokenizer: a leading quote splits off one-letter words only, "'s" is
        # split only before a space, and a sentence's final period splits off.
        ("'brush' and 'a dog", ["'brush", "'", "and", "'", "a", "dog"]),
        ("the man's\nhat", ["the", "man's", "hat"]),
        ("a dog. the cat", ["a", "dog", ".", "the", "cat"]),
        ("a dog.) the cat", ["a", "dog", ".", ")", "the", "cat"]),
        ("a dog., the cat", ["a", "dog.", ",", "the", "cat"]),
        ("hat\u2014dog", ["hat\u2014dog"]),
    ],
)
def test_tokens_are_those_of_nltk_381(text, expected):
    assert tokens(text) == expected


@pytest.mark.parametrize(
    "names, objects, classes",
    [
        (["two men"], ["man"], ["person"]),
        (["parked car"], ["car"], ["car"]),
        (["a man's hat"], ["man", "hat"], ["person"]),
        (["plate with food"], ["plate", "food"], []),
        (["red car"], ["car"], ["car"]),
        (["hot dogs"], ["hot dog"], ["hot dog"]),  # a two-word name comes first
        (["teddy bears"], ["teddy bear"], ["teddy bear"]),
        (["vases", "hairdryers"], ["vase", "hairdryer"], ["vase", "hair drier"]),  # spaCy's plurals
        (["leather couch"], ["leather couch"], []),  # a run of nouns is one object
        (["remote"], ["remote"], ["remote"]),
        (["dog", "dogs", "a dog"], ["dog"], ["dog"]),  # each object once per response
        (["toilet", "seat"], ["toilet", "seat"], ["toilet"]),
        (["baby elephant"], ["elephant"], ["elephant"]),
    ],
)
def test_judge_names_become_objects_as_the_official_post_processing(vocab, names, objects, classes):
    assert vocab.names_to_objects(names) == objects
    assert [m.cls for m in vocab.mentions_in_names(names)] == classes


def test_objects_are_the_classes_named(vocab):
    assert vocab.objects("Two dogs, a puppy and a man on a sofa.") == {"dog", "person", "couch"}


def test_ground_truth_is_instances_union_caption_objects_read_the_official_way(vocab):
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
            {"image_id": 3, "caption": "Two men stand by the vases."},  # neither plural is read
            {"image_id": 4, "caption": "Nothing here."},
        ]
    }
    assert ground_truth(vocab, instances, captions, [1, 2, 3, 4]) == {
        1: {"dog", "dining table", "person"},
        2: {"chair", "cat", "bench"},
        3: set(),
        4: set(),
    }
