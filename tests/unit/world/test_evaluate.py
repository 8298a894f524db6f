"""The world evaluation's counts against scene graphs: CHAIR and the prior's share of the hallucinations."""

from __future__ import annotations

from bpo_data.world.evaluate import chair, hallucination_kinds
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
    kinds = hallucination_kinds(scenes, descriptions)
    assert kinds == {"partner": 3, "first": 1, "other": 3}
    assert sum(kinds.values()) == chair(scenes, descriptions)["hallucinated_mentions"]


def test_a_description_that_names_only_what_is_there_has_no_hallucinated_kind():
    scenes = [_scene("boat", "bird")]
    kinds = hallucination_kinds(scenes, ["A boat. The bird keeps the boat company."])
    assert kinds == {"partner": 0, "first": 0, "other": 0}
