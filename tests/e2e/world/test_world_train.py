"""End to end: `world make`, then a reduced `world train` (few scenes, steps) that saves, loads, evaluates."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bpo_data.world.cli import EVALUATION_FILE, world_app
from bpo_data.world.model import PROVENANCE_FILE

pytestmark = pytest.mark.slow


def test_make_train_evaluate(tmp_path):
    runner = CliRunner()
    world, model = tmp_path / "world", tmp_path / "model"
    made = runner.invoke(
        world_app,
        ["make", "--out", str(world), "--scenes", "40", "--eval-scenes", "6", "--objhal-scenes", "4"],
    )
    assert made.exit_code == 0, made.output
    trained = runner.invoke(
        world_app,
        [
            "train",
            "--out",
            str(model),
            "--world",
            str(world),
            "--max-steps",
            "4",
            "--vision-steps",
            "3",
            "--vision-pictures",
            "20",
            "--threads",
            "1",
            "--text-hidden",
            "64",
            "--text-layers",
            "2",
            "--eval-limit",
            "3",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "CHAIRi" in trained.stdout and "prior:" in trained.stdout

    provenance = json.loads((model / PROVENANCE_FILE).read_text())
    text = json.loads((model / "config.json").read_text())["text_config"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (64, 2, 2)
    assert provenance["settings"]["spec"]["text_hidden"] == 64
    assert provenance["steps"] == 4 and provenance["world"]["seed"] == 0
    assert provenance["stage1"]["steps"] == 3 and provenance["stage1"]["pictures"] == 20
    by_colour = provenance["stage1"]["class_accuracy_by_colour"]
    assert by_colour["violating"]["typical"] is None  # a violating scene has no typically coloured object
    assert by_colour["violating"]["atypical"] is not None
    assert set(provenance["stage1"]["held_out_accuracy"]) >= {"cls", "colour", "count", "sign", "setting"}
    assert provenance["world"]["params"]["pairs"]["dog"] == "sports ball"
    report = json.loads((model / EVALUATION_FILE).read_text())
    assert report["eval_clean"]["chair"]["descriptions"] == 3
    assert set(report["eval_violating"]["qa"]) >= {"colour", "count", "position", "existence", "all"}

    from transformers import AutoProcessor, LlavaForConditionalGeneration

    loaded = LlavaForConditionalGeneration.from_pretrained(model)
    processor = AutoProcessor.from_pretrained(model)
    assert loaded.config.vision_config.image_size == 96
    assert processor.tokenizer.padding_side == "left"


def test_a_language_model_width_heads_cannot_split_is_refused():
    refused = CliRunner().invoke(world_app, ["train", "--out", "unused", "--text-hidden", "100"])
    assert refused.exit_code == 2 and "multiple of 32" in refused.output and "try 96" in refused.output
