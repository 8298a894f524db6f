"""The world model: training sees exactly the generation layout; the shipped model and sample are usable."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
from support.world import open_rgb

from bpo_data.coco_objects import coco_vocabulary
from bpo_data.prompting import llava_prompt
from bpo_data.recipe import SourceSpec
from bpo_data.schema import Reject
from bpo_data.sources import read_units
from bpo_data.world.make import SOURCE_FILES, read_scenes, scene_image, source_specs
from bpo_data.world.model import PROVENANCE_FILE, ModelSpec, build_processor, build_tokenizer, world_model_dir
from bpo_data.world.params import WORLD
from bpo_data.world.train import IGNORE, WorldDataset, read_examples

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


def test_shipped_model_names_what_is_in_the_picture(world_engine):
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
    right = 0
    for scene, result in zip(scenes, results):
        assert result.error is None and result.text
        right += bool({m.cls for m in coco_vocabulary().mentions(result.text)} & scene.classes)
    assert right >= len(scenes) * 0.8, [r.text for r in results]


def test_shipped_model_answers_a_colour_question(world_engine):
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
    assert sum(qa_correct(q, r.text or "") for q, r in zip(items, results)) >= len(items) / 2, [
        (q["question"], q["expected"], r.text) for q, r in zip(items, results)
    ]
