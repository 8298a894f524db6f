"""A made world: the real source readers read it with no rejects, files agree with the scene graphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.world import SMALL_WORLD, open_rgb

from bpo_data.coco_objects import coco_vocabulary
from bpo_data.recipe import SourceSpec
from bpo_data.schema import Reject
from bpo_data.sources import read_units
from bpo_data.world.evaluate import read_qa
from bpo_data.world.make import SOURCE_FILES, make_world, read_scenes, scene_image, source_specs
from bpo_data.world.scenes import draw_scene

SPLITS = ("train", "eval_clean", "eval_violating")


@pytest.mark.parametrize("split", SPLITS)
def test_the_real_readers_read_every_record(small_world, split):
    world, record = small_world
    counts = record["splits"][split]
    expected = {
        "sharegptv": counts["sharegptv"],
        "llavar": counts["llavar"],
        "llava-instruct": counts["llava_instruct"],
    }
    for entry in source_specs(world / split):
        spec = SourceSpec(**entry, turns="all")
        out = list(read_units(spec, seed=0))
        rejects = [r for r in out if isinstance(r, Reject)]
        assert not rejects, rejects[:3]
        assert len({u.record_id for u in out}) == expected[spec.format]
        for unit in out:
            assert (Path(unit.image_root) / unit.image).is_file()
            assert unit.answer and "<image>" not in unit.question


def test_formats_look_like_the_real_files(small_world):
    world, _ = small_world
    sharegptv = json.loads((world / "train" / SOURCE_FILES["sharegptv"][0]).read_text())
    assert all(r["image"].startswith("coco/train2017/") for r in sharegptv)
    llavar = [
        json.loads(line) for line in (world / "train" / SOURCE_FILES["llavar"][0]).read_text().splitlines()
    ]
    assert llavar and all("/" not in r["image"] for r in llavar)
    instruct = json.loads((world / "train" / SOURCE_FILES["llava-instruct"][0]).read_text())
    ids = [r["id"] for r in instruct]
    assert len(set(ids)) < len(ids), "LLaVA-Instruct ids name the image and repeat"
    spec = SourceSpec(**source_specs(world / "train")[2], turns="all")
    keys = [u.record_id for u in read_units(spec, seed=0) if u.turn == 0]
    assert any(key.endswith("~1") for key in keys)


def test_same_seed_same_files(small_world, tmp_path):
    world, _ = small_world
    again = tmp_path / "again"
    make_world(again, **SMALL_WORLD)
    for rel in ("world.json", "train/sharegptv.json", "train/llava_instruct.json", "eval_violating/qa.jsonl"):
        assert (again / rel).read_bytes() == (world / rel).read_bytes(), rel
    other = tmp_path / "other"
    make_world(other, **{**SMALL_WORLD, "seed": SMALL_WORLD["seed"] + 1})
    assert (other / "train/sharegptv.json").read_bytes() != (world / "train/sharegptv.json").read_bytes()


def test_more_held_out_scenes_keep_the_fewer_as_their_first(small_world, tmp_path):
    world, _ = small_world
    more = tmp_path / "more"
    make_world(more, **{**SMALL_WORLD, "eval_scenes": SMALL_WORLD["eval_scenes"] + 7})
    assert (more / "train/sharegptv.json").read_bytes() == (world / "train/sharegptv.json").read_bytes()
    for split in ("eval_clean", "eval_violating"):
        fewer, longer = read_scenes(world / split), read_scenes(more / split)
        assert len(longer) == len(fewer) + 7
        assert [s.to_dict() for s in longer[: len(fewer)]] == [s.to_dict() for s in fewer]
        last = fewer[-1]
        assert scene_image(more / split, last).read_bytes() == scene_image(world / split, last).read_bytes()
        ids = {s.id for s in fewer}
        asked = [q for q in read_qa(more / split) if q["id"] in ids]
        assert asked == read_qa(world / split)


def test_captions_and_pictures_agree_with_the_scene_graphs(small_world):
    world, _ = small_world
    for split in SPLITS:
        scenes = {s.id: s for s in read_scenes(world / split)}
        for record in json.loads((world / split / SOURCE_FILES["sharegptv"][0]).read_text()):
            scene = scenes[record["id"]]
            mentioned = {m.cls for m in coco_vocabulary().mentions(record["conversations"][1]["value"])}
            assert mentioned == scene.classes
        scene = next(iter(scenes.values()))
        assert draw_scene(scene).tobytes() == open_rgb(scene_image(world / split, scene)).tobytes()


def test_held_out_splits_are_held_out(small_world):
    world, record = small_world
    train = {s.signature() for s in read_scenes(world / "train")}
    for split in ("eval_clean", "eval_violating", "objhal"):
        scenes = read_scenes(world / split)
        assert scenes and not train & {s.signature() for s in scenes}
    assert all(s.violations for s in read_scenes(world / "eval_violating"))
    assert not any(s.violations for s in read_scenes(world / "eval_clean"))
    assert record["params"]["partner_rate"] == 0.85


def test_objhal_files_read_by_the_project_object_halbench(small_world):
    objhal = pytest.importorskip("trainer_min.eval.objhal")
    world, _ = small_world
    items = objhal.load_items(world / "objhal")
    scenes = {int(s.id): s for s in read_scenes(world / "objhal")}
    truth = objhal.load_ground_truth(world / "objhal", coco_vocabulary(), {i.image_id for i in items})
    assert {i.question for i in items} <= set(
        json.loads((world / "world.json").read_text())["objhal_prompts"]["prompts"]
    )
    for item in items:
        assert truth[item.image_id] == scenes[item.image_id].classes
        assert objhal.questions([item], world / "objhal")[0].image().size == (96, 96)
