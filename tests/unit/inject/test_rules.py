"""The model-free ``rules`` injector: deterministic, targeted edits that pass validation."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import subprocess
import sys
from importlib.resources import files

import pytest
from support.units import unit

from bpo_data.inject.rules import ERROR_TYPES, SCENES, RulesInjector
from bpo_data.inject.validation import validate_rewrite
from bpo_data.recipe import ValidationSpec

ANSWERS = [
    "There are two dogs to the left of a red car.",
    "A man holds a hot dog and a cell phone while a teddy bear sits on the bench.",
    "The sign above the shop reads OPEN 24 HOURS.",
    "One cat sleeps on the couch in front of the TV.",
    "Red apples and oranges fill a bowl on the top shelf.",
    "Three",
    "The bus number is 42.",
    "An orange kite flies above the beach.",
    "The laptop is on the right side of the desk, next to a cup of coffee.",
    "A giraffe stands behind a zebra in the foreground.",
    "The price of the large pizza is $12.99.",
    "Two skiers carry their skis up the snowy slope.",
    "A white toilet sits beside a sink with a toothbrush on it.",
    "The clock on the wall shows 10:10.",
    "Four sheep graze near a brown horse.",
    "A blue and yellow train waits at the station under a gray sky.",
    "The image shows a kitchen with a microwave above the oven and a refrigerator on the left.",
    "Several umbrellas are open on the beach, and a surfboard leans against the lifeguard tower.",
    "A black dog catches a frisbee in a green park.",
    "The book on the table is titled 'Chapter 7'.",
    "Yes, the man is wearing a tie and holding a suitcase.",
    "A stop sign stands at the corner of the street, to the right of a fire hydrant.",
    "The child is holding a baseball bat with both hands.",
    "Two elephants bathe in the river while birds fly overhead.",
]


WORD = re.compile(r"[A-Za-z0-9]+")


IGNORED = {"a", "an", "is", "are", "was", "were", "has", "have"}  # articles and verbs kept in agreement


def changed_words(original: str, rewritten: str) -> list[tuple[str, str]]:
    """(old words, new words) of each region that differs; equal-length regions word by word."""
    old, new = WORD.findall(original), WORD.findall(rewritten)
    out = []
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in old], b=[w.lower() for w in new], autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        before = [w for w in old[a0:a1] if w.lower() not in IGNORED]
        after = [w for w in new[b0:b1] if w.lower() not in IGNORED]
        if len(before) == len(after):
            out.extend((b, a) for b, a in zip(before, after) if b.lower() != a.lower())
        elif before or after:
            out.append((" ".join(before), " ".join(after)))
    return out


COLOURS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray"}
COLOURS |= {"grey", "silver", "beige", "golden", "gold"}
NUMBERS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
POSITIONS = {"left", "right", "above", "below", "in front of", "behind", "top", "bottom", "foreground"}
POSITIONS |= {"background", "upper", "lower", "beneath", "underneath", "on top of", "inside", "outside"}


def categories_of(old: str, new: str) -> set[str]:
    """Which error types a changed region shows, judged from the words alone.

    A region can join neighbouring edits ("red car" → "gray parking meter"), so a leading number
    or colour is judged first and the rest of the region after it.
    """
    old_l, new_l = old.lower(), new.lower()
    if old_l in POSITIONS and new_l in POSITIONS:
        return {"position"}
    old_words, new_words = old_l.split(), new_l.split()
    found = set()
    for vocabulary, error_type in ((NUMBERS, "count"), (COLOURS, "attribute")):
        if old_words and new_words and old_words[0] in vocabulary and new_words[0] in vocabulary:
            if old_words[0] != new_words[0]:
                found.add(error_type)
            old_words, new_words = old_words[1:], new_words[1:]
    if old_words and new_words and old_words[0].isdigit() and new_words[0].isdigit():
        return found | {"text_number"}
    # A count from one to many pluralises its noun ("one dog" → "two dogs"): not an object change.
    if [w.rstrip("s") for w in old_words] != [w.rstrip("s") for w in new_words]:
        found.add("object")
    return found


def test_same_seed_same_output_and_other_seeds_differ():
    units = [unit(answer, i) for i, answer in enumerate(ANSWERS)]
    first = [RulesInjector(seed=0).rewrite(u) for u in units]
    again = [RulesInjector(seed=0).rewrite(u) for u in units]
    other = [RulesInjector(seed=1).rewrite(u) for u in units]
    assert first == again
    assert all(result is not None for result in first)
    assert sum(a != b for a, b in zip(first, other)) >= len(units) // 2


def test_output_does_not_depend_on_the_process_hash_seed():
    """Python salts str hashes per process; a set iterated anywhere would change the rewrites."""
    script = (
        "import dataclasses, json, sys; from bpo_data.schema import Unit; "
        "from bpo_data.inject.rules import RulesInjector; r = RulesInjector(seed=7, max_edits=3); "
        "print(json.dumps([r.rewrite(Unit(**u)) for u in json.loads(sys.stdin.read())]))"
    )
    units = json.dumps([dataclasses.asdict(unit(a, i)) for i, a in enumerate(ANSWERS)])
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], input=units, capture_output=True, text=True, env=env, check=True
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert [tuple(o) for o in outputs[0]] == [
        (text, types)
        for text, types in (
            RulesInjector(seed=7, max_edits=3).rewrite(unit(a, i)) for i, a in enumerate(ANSWERS)
        )
    ]


def test_output_is_never_identical_and_always_passes_validation():
    spec = ValidationSpec()
    for seed in range(6):
        injector = RulesInjector(seed=seed, max_edits=3)
        for i, answer in enumerate(ANSWERS):
            text, error_types = injector.rewrite(unit(answer, i))
            assert text != answer
            assert validate_rewrite(answer, text, spec).ok, (answer, text)
            assert error_types and set(error_types) <= set(ERROR_TYPES)


def test_reported_error_types_match_what_changed():
    sentence = "There are two dogs to the left of a red car."
    seen: set[str] = set()
    for seed in range(40):
        text, error_types = RulesInjector(seed=seed, max_edits=3).rewrite(unit(sentence))
        regions = changed_words(sentence, text)
        categories = set().union(*(categories_of(old, new) for old, new in regions))
        assert categories == set(error_types), (text, regions, error_types)
        seen |= categories
    assert seen == {"object", "count", "position", "attribute"}


@pytest.mark.parametrize(
    ("sentence", "error_type", "old", "allowed"),
    [
        ("A kitten naps.", "object", "kitten", None),
        ("The wall is painted red.", "attribute", "red", COLOURS),
        ("There are three people here.", "count", "three", NUMBERS),
        ("The man stands on the left side.", "position", "left", {"right"}),
        ("The lamp hangs above the door.", "position", "above", {"below"}),
        ("The sign says OPEN 24.", "text_number", "24", None),
    ],
)
def test_each_rule_applies_to_a_sentence_that_needs_it(sentence, error_type, old, allowed):
    for seed in range(8):
        text, error_types = RulesInjector(seed=seed).rewrite(unit(sentence))
        assert error_types == [error_type]
        [(before, after)] = changed_words(sentence, text)
        assert before == old
        if allowed is not None:
            assert after.lower() in allowed and after.lower() != old
        if error_type == "text_number":
            assert after.isdigit() and len(after) == 2 and text.startswith("The sign says OPEN ")


def test_counts_keep_singular_and_plural_agreement():
    for seed in range(10):
        text, types = RulesInjector(seed=seed).rewrite(unit("There is one dog here."))
        if types != ["count"]:
            continue  # the object rule won this time
        assert re.fullmatch(r"There are (two|three) [a-z ]*s here\.", text), text
    for seed in range(10):
        text, types = RulesInjector(seed=seed).rewrite(unit("Four sheep"))
        number, noun = text.split(maxsplit=1)
        assert number in {"Two", "Three", "Five", "Six"} if "count" in types else number == "Four"
        # "sheep" after a number above one is plural, so the swapped-in object is too.
        assert noun.endswith("s") if "object" in types else noun == "sheep", text


def test_casing_of_the_replaced_word_is_kept():
    sentence = "Red balloons float LEFT of the Giraffe near a STOP SIGN."
    for seed in range(30):
        text, _ = RulesInjector(seed=seed, max_edits=3).rewrite(unit(sentence))
        for old, new in changed_words(sentence, text):
            if old.isupper():
                assert new.isupper(), (old, new, text)
            elif old[0].isupper():
                assert new[0].isupper() and not new.isupper(), (old, new, text)
            else:
                assert new == new.lower(), (old, new, text)


def test_synonyms_plurals_and_two_word_objects_are_recognised():
    for seed in range(10):
        injector = RulesInjector(seed=seed)
        text, types = injector.rewrite(unit("A hot dog."))
        assert types == ["object"] and "hot" not in text.lower().split(), text  # not "A hot cat."
        text, types = injector.rewrite(unit("My cell phone."))
        assert types == ["object"] and "cell" not in text.lower(), text
        text, types = injector.rewrite(unit("A teddy bear."))
        assert types == ["object"] and "teddy" not in text.lower(), text
        text, types = injector.rewrite(unit("Puppies sleep."))
        noun = text.removesuffix(" sleep.")
        assert types == ["object"] and noun != "Puppies" and (noun.endswith("s") or noun == "Sheep"), text
        assert injector.rewrite(unit("A skateboarder rides.")) is None  # people are not swapped


def test_an_article_follows_the_new_word():
    for seed in range(30):
        text, types = RulesInjector(seed=seed).rewrite(unit("I see a red umbrella."))
        new_word = text.split()[3]
        article = text.split()[2]
        assert article == ("an" if new_word[0] in "aeiou" else "a"), text


def test_no_rule_applies_gives_none():
    injector = RulesInjector(seed=0)
    for answer in ("Yes.", "No, it is a sunny day.", "", "He left early and was right about it."):
        assert injector.rewrite(unit(answer)) is None


def test_max_edits_bounds_the_number_of_rules():
    for i, answer in enumerate(ANSWERS):
        _, types = RulesInjector(seed=5, max_edits=1).rewrite(unit(answer, i))
        assert len(types) == 1
    with pytest.raises(ValueError, match="max_edits"):
        RulesInjector(seed=0, max_edits=0)


def test_every_coco_object_class_has_plausible_swaps():
    listing = files("bpo_data").joinpath("resources", "coco_synonyms_refine.txt").read_text(encoding="utf-8")
    classes = {line.split(",")[0].strip() for line in listing.splitlines() if line.strip()}
    in_scenes = {name for scene in SCENES.values() for name in scene}
    assert len(classes) == 80
    assert in_scenes == classes - {"person"}
    assert all(len(scene) >= 3 for scene in SCENES.values())


CAPTION = (  # ShareGPT4V-like: about the length of its average caption
    "The image captures a lively scene at a small outdoor market on a sunny afternoon. In the foreground, "
    "a wooden stall is covered with a striped awning in shades of red and white, and its counter is "
    "crowded with baskets of fresh produce: bright oranges, green apples, bunches of bananas and a few "
    "heads of broccoli. A woman in a light blue dress stands behind the counter, weighing fruit on a "
    "silver scale while she talks to a customer. To the left of the stall, a young man leans against a "
    "bicycle with a brown leather bag hanging from its handlebars. Further back, several people walk "
    "along the cobblestone street, some carrying shopping bags and one holding a black umbrella to shade "
    "herself from the sun. A chalkboard sign propped against the stall lists prices in white handwriting, "
    "with apples marked at 2 euros per kilo. The buildings in the background have tall windows with "
    "flower boxes, and the overall atmosphere is warm, busy and inviting."
)
