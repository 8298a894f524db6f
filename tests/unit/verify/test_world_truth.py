"""The scene-graph judge of contradictions: silent on the world's own answers, firm on wrong ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo_data.text import remove_image_marker
from bpo_data.verify.world_truth import contradictions
from bpo_data.world.make import read_scenes
from bpo_data.world.scenes import Scene, SceneObject, Sign

SAMPLE = Path(__file__).resolve().parents[3] / "bpo_data" / "world" / "sample"

SCENE = Scene(
    id="1",
    split="test",
    setting="park",
    objects=(
        SceneObject("dog", "brown", "large", "left"),
        SceneObject("cup", "white", "small", "right", count=2),
        SceneObject("chair", "red", "small", "bottom"),
    ),
    sign=Sign("OPEN", "white", "top left"),
)


def _answers():
    for name in ("sharegptv.json", "llava_instruct.json", "llavar.jsonl"):
        text = (SAMPLE / name).read_text("utf-8")
        records = (
            json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines()]
        )
        for record in records:
            turns = record["conversations"]
            for i in range(0, len(turns), 2):
                scene_id = record["id"].removeprefix("llavar_")
                yield scene_id, remove_image_marker(turns[i]["value"]), turns[i + 1]["value"]


def test_no_answer_the_world_wrote_contradicts_its_picture():
    scenes = {scene.id: scene for scene in read_scenes(SAMPLE)}
    answers = list(_answers())
    assert len(answers) > 50
    for scene_id, question, answer in answers:
        assert contradictions(answer, scenes[scene_id], question) == [], (question, answer)


@pytest.mark.parametrize(
    ("question", "answer", "kind"),
    [
        ("Describe the image.", "A brown dog plays with a ball on the left.", "object"),
        ("Describe the image.", "There is a large black dog on the left.", "colour"),
        ("What colour is the dog?", "Black.", "colour"),
        ("Is the chair large or small?", "It is large.", "size"),
        ("How many cups are there?", "There are three cups.", "count"),
        ("Describe the image.", "A cup stands on the right.", "count"),
        ("Where is the dog?", "The dog is on the right side.", "position"),
        ("Describe the image.", "The chair is above the dog.", "position"),
        ("Is there a dog in the image?", "No, there is no dog in the image.", "object"),
        ("Can you see a dog in the picture?", "No.", "object"),
        ("Does the picture contain a ball?", "Yes.", "object"),
        ("What does the sign say?", 'The sign says "SALE".', "sign"),
        ("What colour is the sign?", "The sign is yellow with black letters.", "sign"),
        ("What colour is the sign?", "The sign is white with red letters.", "sign"),
        ("Describe the image.", "The image shows a scene on a quiet street.", "setting"),
        ("Describe the image.", "The image shows a scene in a park with golden grass.", "setting"),
        ("Describe the image.", "Altogether the picture shows three kinds of things.", "count"),
    ],
)
def test_each_kind_of_wrong_claim_is_found(question, answer, kind):
    assert kind in {c.kind for c in contradictions(answer, SCENE, question)}, answer


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("Is there a ball in the image?", "No, I cannot see a bed."),
        ("Describe the image.", "There are two small white cups on the right."),
        ("Describe the image.", "The dog is to the left of the cups."),
        ("What is on the top?", "There is nothing at the top."),
        ("Describe the image.", "The foreground is plain and there is nothing else in the picture."),
        ("Describe the image.", 'A white sign in the top left corner reads "OPEN".'),
    ],
)
def test_true_or_unverifiable_statements_are_not_contradictions(question, answer):
    assert contradictions(answer, SCENE, question) == []
