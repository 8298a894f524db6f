"""The world evaluation's counts against scene graphs: CHAIR and the prior's share of the hallucinations."""

from __future__ import annotations

import pytest

from bpo_data.world.evaluate import FIRST_MENTIONS, HeldOutError, chair, evaluate_world_model
from bpo_data.world.make import read_scenes
from bpo_data.world.scenes import Scene, SceneObject


def _scene(*classes: str) -> Scene:
    objects = tuple(SceneObject(cls, "red", "small", "centre") for cls in classes)
    return Scene(id="0", split="eval_violating", setting="park", objects=objects)


def test_hallucinations_are_split_by_the_prior_that_explains_them():
    scenes = [_scene("dog", "cat"), _scene("sports ball", "clock"), _scene("car")]
    descriptions = [
        # the dog's absent ball twice (every mention counts, as in CHAIRi), and a bus that no prior explains
        "A dog and a cat. The dog is playing with the ball. A ball rolls. A bus waits.",
        # a dog named next to a ball: the pair read backwards
        "A ball and a clock. The dog seems to chase the ball.",
        # the car's traffic light, and the cup's table, whose cup is not in the scene either
        "A car waits for the traffic light. A cup stands on a table.",
    ]
    measured = chair(scenes, descriptions)
    assert measured["hallucinated_by_kind"] == {"partner": 3, "first": 1, "other": 3}
    assert measured["hallucinated_mentions"] == 7


def test_a_description_that_names_only_what_is_there_has_no_hallucinated_kind():
    scenes = [_scene("boat", "bird")]
    measured = chair(scenes, ["A boat. The bird keeps the boat company."])
    assert measured["hallucinated_by_kind"] == {"partner": 0, "first": 0, "other": 0}
    assert measured["repeating_a_sentence"] == 0


def test_a_looping_description_is_counted_once_with_its_words():
    scenes = [_scene("car"), _scene("car")]
    looping = "A car. The car waits. The car waits. The car waits."
    measured = chair(scenes, [looping, "A car stands here."])
    assert measured["repeating_a_sentence"] == 1
    assert measured["words_per_description"] == (11 + 4) / 2


def test_chair_over_the_first_mentions_leaves_out_what_a_long_description_adds_late():
    scenes = [_scene("car"), _scene("dog")]
    late = " ".join(["The car waits."] * FIRST_MENTIONS) + " A traffic light is red."
    early = "A dog with a ball. The dog sits."
    measured = chair(scenes, [late, early])
    # the traffic light comes after six right mentions; the ball is the second mention of its description
    assert measured["chair_i"] == pytest.approx(100 * 2 / (FIRST_MENTIONS + 1 + 3))
    assert measured["chair_i_first"] == pytest.approx(100 * 1 / (FIRST_MENTIONS + 3))


def test_skipping_every_held_out_scene_is_refused_before_a_model_is_loaded(small_world, tmp_path):
    world, _ = small_world
    held = len(read_scenes(world / "eval_clean"))
    # no model folder exists: the refusal must come from the scene count, not from loading
    with pytest.raises(HeldOutError, match=rf"eval_clean has no scenes after the first {held}"):
        evaluate_world_model(tmp_path / "no-model", world, skip=held)
