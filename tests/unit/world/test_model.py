"""The world model: training sees exactly the generation layout; the shipped model and sample are usable."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
from support.world import open_rgb

from bpo_data.prompting import llava_prompt
from bpo_data.recipe import SourceSpec
from bpo_data.schema import Reject
from bpo_data.sources import read_units
from bpo_data.world.make import SOURCE_FILES, read_scenes, scene_image, source_specs
from bpo_data.world.model import PROVENANCE_FILE, ModelSpec, build_processor, build_tokenizer, world_model_dir
from bpo_data.world.params import WORLD
from bpo_data.world.scenes import Scene, SceneObject, Sign
from bpo_data.world.train import IGNORE, WorldDataset, read_examples
from bpo_data.world.vision import Labels, cell_index

SAMPLE = Path(str(files("bpo_data.world").joinpath("sample")))


def test_training_tokens_are_the_generation_prompt_plus_the_answers(small_world):
    world, _ = small_world
    examples = [e for e in read_examples(world / "train") if len(e.turns) >= 3][:2]
    spec = ModelSpec()
    tokenizer = build_tokenizer([p for e in examples for t in e.turns for p in t], spec)
    processor = build_processor(tokenizer, spec)
    dataset = WorldDataset(examples, tokenizer, spec.image_tokens)
    for example, row in zip(examples, dataset.rows):
        messages, answered = [], 0
        for question, answer in example.turns:
            messages.append({"role": "user", "content": question})
            prompt = processor(
                images=open_rgb(example.image), text=llava_prompt(messages), return_tensors="pt"
            )
            prompt_ids = prompt["input_ids"][0].tolist()
            assert row["input_ids"][: len(prompt_ids)] == prompt_ids
            # earlier answers are trained on; everything the user or the template says is not
            assert all(label == IGNORE for label in row["labels"][answered : len(prompt_ids)])
            answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
            end = len(prompt_ids) + len(answer_ids)
            assert row["labels"][len(prompt_ids) : end] == answer_ids
            answered = end
            messages.append({"role": "assistant", "content": answer})
        assert row["input_ids"][-1] == tokenizer.eos_token_id == row["labels"][-1]


def test_each_image_token_is_one_cell_of_the_world_grid():
    spec = ModelSpec()
    assert spec.image_size == WORLD.image_size and spec.image_tokens == 9
    places = (*WORLD.positions, *WORLD.corners)
    assert sorted(cell_index(p) for p in places) == list(range(9))
    assert [cell_index(p) for p in ("top left", "left", "centre", "bottom")] == [0, 3, 4, 7]
    scene = Scene(
        id="t",
        split="train",
        setting="park",
        objects=(SceneObject("dog", "brown", "large", "left"), SceneObject("cup", "red", "small", "top", 2)),
        sign=Sign("OPEN", "white", "bottom right"),
    )
    labels = Labels()
    cells = labels.of(scene)
    assert cells["cls"].tolist() == [0, labels.classes["cup"], 0, labels.classes["dog"], 0, 0, 0, 0, 0]
    assert cells["count"].tolist() == [0, 2, 0, 1, 0, 0, 0, 0, 0]
    assert cells["colour"][3] == labels.colours["brown"] and cells["size"][1] == labels.sizes["small"]
    assert cells["sign"].tolist() == [0] * 8 + [labels.signs["OPEN"]]


def test_shipped_sample_reads_with_the_real_readers():
    scenes = {s.id for s in read_scenes(SAMPLE)}
    for entry in source_specs(SAMPLE):
        units = list(read_units(SourceSpec(**entry, turns="all"), seed=0))
        assert units and not [u for u in units if isinstance(u, Reject)]
        assert {u.record_id.split("~")[0].removeprefix("llavar_") for u in units} <= scenes
    assert (SAMPLE / SOURCE_FILES["llavar"][0]).read_text().strip()


def test_shipped_model_matches_the_world_it_claims():
    model = world_model_dir()
    provenance = json.loads((model / PROVENANCE_FILE).read_text())
    assert provenance["world"]["params"] == WORLD.to_json(), (
        "the world's parameters changed since the shipped model was trained; "
        "retrain it with `bpo-data world train --out bpo_data/world/model`"
    )
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    assert 0 < weights <= 30 * 2**20


@pytest.fixture(scope="module")
def world_engine():
    from bpo_data.engines.hf import HFVisionEngine, LlavaRuntime

    return HFVisionEngine(LlavaRuntime.load(str(world_model_dir()), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def sample_descriptions(world_engine) -> list[tuple]:
    """(scene, description) of every shipped sample scene, greedy, as the world evaluation asks."""
    from bpo_data.engines.base import VisionRequest
    from bpo_data.recipe import SamplingParams

    scenes = read_scenes(SAMPLE)
    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=60)
    requests = [
        VisionRequest(
            image=open_rgb(scene_image(SAMPLE, s)),
            messages=[{"role": "user", "content": "Describe this image in detail."}],
            sampling=sampling,
        )
        for s in scenes
    ]
    results = world_engine.generate(requests)
    assert all(r.error is None and r.text for r in results), results
    return [(scene, r.text) for scene, r in zip(scenes, results)]


def test_shipped_model_describes_what_the_picture_shows(sample_descriptions):
    # the setting (the picture's background) is read off the picture, and the text varies with it
    right = [any(p in text for p in WORLD.settings[s.setting]["phrases"]) for s, text in sample_descriptions]
    assert sum(right) >= len(right) * 0.8, sample_descriptions
    assert len({text for _, text in sample_descriptions}) >= len(sample_descriptions) * 0.7


def test_shipped_model_answers_a_colour_question_with_a_colour(world_engine):
    from bpo_data.engines.base import VisionRequest
    from bpo_data.recipe import SamplingParams
    from bpo_data.world.evaluate import qa_correct, read_qa

    items = [q for q in read_qa(SAMPLE) if q["type"] == "colour"]
    scenes = {s.id: s for s in read_scenes(SAMPLE)}
    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=20)
    results = world_engine.generate(
        [
            VisionRequest(
                image=open_rgb(scene_image(SAMPLE, scenes[q["id"]])),
                messages=[{"role": "user", "content": q["question"]}],
                sampling=sampling,
            )
            for q in items
        ]
    )
    answers = [set((r.text or "").lower().replace(".", " ").split()) for r in results]
    assert all(words & set(WORLD.colours) for words in answers), [r.text for r in results]
    # and mostly the right colour: read off the picture, not the class's typical colour
    right = [qa_correct(q, r.text or "") for q, r in zip(items, results)]
    assert sum(right) >= 0.6 * len(right), [(q["expected"], r.text) for q, r in zip(items, results)]
