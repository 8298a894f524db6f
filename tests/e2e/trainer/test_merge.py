"""Merging and loading for evaluation: a plain LLaVA that answers like base + adapter, found by content."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open
from typer.testing import CliRunner

from trainer_min import load_for_eval
from trainer_min.cli import app

pytestmark = pytest.mark.slow

QUESTIONS = ("What is in the image?", "Describe the picture in detail.", "How many dogs are there?")


@pytest.fixture(scope="module")
def merged(dpo_run, tmp_path_factory):
    """The 30-step DPO run's adapter, merged with `bpo-train merge`."""
    to = tmp_path_factory.mktemp("merge") / "merged"
    result = CliRunner().invoke(app, ["merge", "--adapter", str(dpo_run.out), "--to", str(to)])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(adapter=dpo_run.out, to=to, base=dpo_run.base)


def _inputs(processor):
    batches = []
    for i, question in enumerate(QUESTIONS):
        image = Image.new("RGB", (32, 32), (250, 250, 250))
        ImageDraw.Draw(image).ellipse([4 + 3 * i, 6, 24, 26], fill=(40 * i, 90, 200))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        batches.append(processor(images=image, text=text, return_tensors="pt"))
    return batches


def _answers(model, processor):
    """(greedy token ids, next-token logits) for each question."""
    out = []
    with torch.no_grad():
        for inputs in _inputs(processor):
            ids = model.generate(**inputs, max_new_tokens=8, do_sample=False)
            out.append((ids[0, inputs["input_ids"].shape[1] :].tolist(), model(**inputs).logits[0, -1]))
    return out


def test_the_merged_model_answers_like_base_plus_adapter(merged):
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(merged.to)
    plain = LlavaForConditionalGeneration.from_pretrained(merged.to).eval()
    with_adapter = PeftModel.from_pretrained(
        LlavaForConditionalGeneration.from_pretrained(merged.base), merged.adapter
    )
    base = LlavaForConditionalGeneration.from_pretrained(merged.base).eval()
    expected, got, untrained = (_answers(m, processor) for m in (with_adapter.eval(), plain, base))
    for (ids_adapter, logits_adapter), (ids_merged, logits_merged), (_, logits_base) in zip(
        expected, got, untrained
    ):
        assert ids_merged == ids_adapter
        assert torch.allclose(logits_merged, logits_adapter, atol=1e-5)
        assert (logits_merged - logits_base).abs().max() > 1e-3  # the adapter did change the model


def test_the_merged_directory_is_a_plain_llava_checkpoint(merged):
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import LlavaForConditionalGeneration

    with safe_open(str(merged.to / "model.safetensors"), framework="pt") as weights:
        keys = list(weights.keys())
    assert not [
        k
        for k in keys
        if "lora_" in k or "base_layer" in k or "modules_to_save" in k or "original_module" in k
    ]
    assert any(key.endswith("multi_modal_projector.linear_1.weight") for key in keys)
    model = LlavaForConditionalGeneration.from_pretrained(merged.to)
    assert not any(isinstance(module, BaseTunerLayer) for module in model.modules())
    assert not (merged.to / "adapter_config.json").exists()
    record = json.loads((merged.to / "training_config.json").read_text())
    assert record["objective"] == "dpo" and record["merged_from"]["model"] == str(merged.base)
    card = (merged.to / "README.md").read_text()
    assert "pipeline_tag: image-text-to-text" in card and "library_name: transformers" in card
    assert f"**Base model:** `{merged.base}`" in card and f"adapter `{merged.adapter.name}` folded" in card


def test_load_for_eval_reads_the_base_from_the_files_not_the_directory_name(merged, tmp_path):
    from transformers import LlavaForConditionalGeneration

    renamed = tmp_path / "not-a-run-name-anyone-would-guess"
    shutil.copytree(merged.adapter, renamed)
    model, processor = load_for_eval(None, renamed, device="cpu")
    reference = LlavaForConditionalGeneration.from_pretrained(merged.to).eval()
    for (ids, logits), (ids_ref, logits_ref) in zip(
        _answers(model, processor), _answers(reference, processor)
    ):
        assert ids == ids_ref and torch.allclose(logits, logits_ref, atol=1e-5)

    # a checkpoint directory has no training_config.json: the base comes from adapter_config.json
    (checkpoint,) = merged.adapter.glob("checkpoint-*")
    shutil.copytree(checkpoint, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt" / "training_config.json").exists()
    model, _ = load_for_eval(None, tmp_path / "ckpt", device="cpu", merge=False)
    assert type(model).__name__.startswith("PeftModel")

    # a base that moved is given explicitly and wins over the recorded one
    moved = tmp_path / "moved-base"
    shutil.copytree(merged.base, moved)
    model, _ = load_for_eval(str(moved), renamed, device="cpu")
    assert model.config._name_or_path == str(moved)


def test_load_for_eval_loads_a_base_alone_and_explains_wrong_inputs(merged):
    from transformers import LlavaForConditionalGeneration

    model, processor = load_for_eval(str(merged.base), None, device="cpu")
    base = LlavaForConditionalGeneration.from_pretrained(merged.base).eval()
    for (ids, logits), (ids_base, logits_base) in zip(_answers(model, processor), _answers(base, processor)):
        assert ids == ids_base and torch.equal(logits, logits_base)
    with pytest.raises(FileNotFoundError, match="holds a full model"):
        load_for_eval(None, merged.to)
    with pytest.raises(ValueError, match="needs a base model id, an adapter directory, or both"):
        load_for_eval(None, None)


def test_merge_refuses_a_non_empty_target(merged):
    result = CliRunner().invoke(app, ["merge", "--adapter", str(merged.adapter), "--to", str(merged.adapter)])
    assert result.exit_code == 2 and "not an empty directory" in result.output
