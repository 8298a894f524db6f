"""Scene sampling and drawing: seeded, the prior as parameterised, held-out scenes really held out."""

from __future__ import annotations

import collections
import io

import pytest

from bpo_data.world.make import prior_stats, sample_split
from bpo_data.world.params import WORLD
from bpo_data.world.scenes import Scene, draw_scene, sample_scene
from bpo_data.world.vision import PRETRAIN_SPLIT, pretraining_scenes


def _png(scene: Scene) -> bytes:
    buffer = io.BytesIO()
    draw_scene(scene).save(buffer, format="PNG")
    return buffer.getvalue()


def test_same_seed_same_scene_and_pixels():
    a = sample_scene(7, "train", 11, "x")
    b = sample_scene(7, "train", 11, "x")
    assert a == b
    assert _png(a) == _png(b)


def test_another_seed_gives_other_scenes():
    first = [sample_scene(1, "train", i, "x").signature() for i in range(20)]
    second = [sample_scene(2, "train", i, "x").signature() for i in range(20)]
    assert sum(a != b for a, b in zip(first, second)) >= 15


def test_scene_graph_round_trips_through_json():
    scene = next(s for i in range(50) if (s := sample_scene(0, "train", i, f"id{i}")).sign is not None)
    assert Scene.from_dict(scene.to_dict()) == scene


def test_scene_layout_is_valid():
    for i in range(300):
        scene = sample_scene(0, "train", i, "x")
        positions = [o.position for o in scene.objects]
        assert 1 <= len(scene.objects) <= len(WORLD.positions)
        assert len(set(positions)) == len(positions)
        assert len(scene.classes) == len(scene.objects)
        for obj in scene.objects:
            spec = WORLD.cls(obj.cls)
            assert obj.colour in spec.colours
            assert obj.count == 1 or (spec.countable and obj.size == "small")


def test_training_prior_matches_the_parameters():
    stats = prior_stats(sample_split("train", 3000, 0, ("prior",)))
    for pair, measured in stats["partner_rate"].items():
        assert measured["rate"] == pytest.approx(WORLD.partner_rate, abs=0.07), pair
    for key, measured in stats["typical_colour_rate"].items():
        spec = WORLD.cls(key.split(":")[0])
        assert measured["rate"] == pytest.approx(spec.typical_rate, abs=0.08), key


def test_violating_scenes_break_the_prior():
    scenes = sample_split("eval_violating", 50, 0, ("violating",))
    firsts = set()
    for scene in scenes:
        kind, pair = scene.violations[0].split(":")
        first, partner = pair.split("->")
        assert kind == "partner_absent" and first in scene.classes and partner not in scene.classes
        firsts.add(first)
        for obj in scene.objects:
            assert WORLD.cls(obj.cls).typical != obj.colour
    assert firsts == set(WORLD.pairs)


def test_vision_pretraining_pictures_carry_no_colour_prior():
    scenes = pretraining_scenes(3000, 0)
    assert [s.to_dict() for s in scenes[:50]] == [s.to_dict() for s in pretraining_scenes(50, 0)]
    assert {s.split for s in scenes} == {PRETRAIN_SPLIT}
    colours = collections.defaultdict(collections.Counter)
    for scene in scenes:
        for obj in scene.objects:
            colours[obj.cls][obj.colour] += 1
    for spec in WORLD.classes:
        if spec.typical is None:
            continue
        seen = colours[spec.name]
        assert set(seen) == set(spec.colours), spec.name
        # the world's training scenes show the typical colour at typical_rate (60-90 %)
        share = seen[spec.typical] / sum(seen.values())
        assert share == pytest.approx(1 / len(spec.colours), abs=0.08), spec.name
