"""The world's text: readable by the project's COCO object reader, true to the scene graph, varied."""

from __future__ import annotations

import random
from dataclasses import asdict

from bpo_data.coco_objects import coco_vocabulary
from bpo_data.world import language
from bpo_data.world.evaluate import qa_correct
from bpo_data.world.params import WORLD
from bpo_data.world.scenes import sample_scene


def _classes(text: str) -> set[str]:
    return {m.cls for m in coco_vocabulary().mentions(text)}


def test_every_object_name_reads_back_as_its_class():
    for spec in WORLD.classes:
        for word in (*spec.words, *spec.plurals):
            assert [m.cls for m in coco_vocabulary().mentions(f"There is a {word} here.")] == [spec.name], (
                word
            )


def test_colours_signs_and_settings_name_no_object():
    settings = [phrase for s in WORLD.settings.values() for phrase in s["phrases"]]
    for text in (*WORLD.colours, *WORLD.sign_words, *WORLD.sign_numbers, *settings):
        assert not _classes(text), text


def test_descriptions_name_exactly_the_scene_objects():
    for i in range(300):
        scene = sample_scene(5, "train", i, "x", "violating" if i % 3 == 0 else "prior")
        for text in (language.describe(scene, random.Random(i)), language.brief(scene, random.Random(i))):
            assert _classes(text) == scene.classes, (scene, text)


def test_answers_agree_with_the_scene_graph():
    """The reference answers score as correct, and only the right word does (the scorer is strict)."""
    for i in range(200):
        scene = sample_scene(6, "train", i, "x")
        for item in language.eval_questions(scene, random.Random(i)):
            assert qa_correct(asdict(item), item.answer), item
            if item.type == "existence":
                assert (item.expected == "yes") == (item.cls in scene.classes)
            if item.type == "colour":
                assert item.expected == scene.object(item.cls).colour
                other = next(c for c in WORLD.colours if c != item.expected)
                assert not qa_correct(asdict(item), f"The {item.cls} is {other}.")
                assert not qa_correct(asdict(item), f"It is {item.expected} and {other}.")


def test_text_varies_for_one_scene_and_across_scenes():
    scene = sample_scene(0, "train", 4, "x")
    assert len({language.describe(scene, random.Random(i)) for i in range(20)}) >= 15
    openings = {
        language.describe(sample_scene(0, "train", i, "x"), random.Random(i)).split(".")[0]
        for i in range(100)
    }
    assert len(openings) >= 20


def test_prompts():
    assert len(language.OBJHAL_PROMPTS) == 8
    assert not set(language.OBJHAL_PROMPTS) & set(language.DESCRIBE_PROMPTS)
