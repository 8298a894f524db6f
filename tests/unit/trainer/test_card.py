"""The model card of an adapter and of a merged model: base model, dataset, image-text-to-text, which BPO."""

from __future__ import annotations

from huggingface_hub import ModelCard

from trainer_min.card import write_model_card

RECORD = {
    "objective": "dpo",
    "model": "llava-hf/llava-1.5-7b-hf",
    "global_step": 10430,
    "training_arguments": {"learning_rate": 2e-6, "beta": 0.1},
    "resolved": {"effective_batch_size": 32},
    "lora": {"r": 64, "alpha": 256},
    "data": {"dataset": "me/bpo-pairs", "version": "v1.0.0", "rows": 166_875, "split": "train"},
}


def test_an_adapter_card_names_its_hub_base_and_dataset(tmp_path):
    card = ModelCard.load(write_model_card(tmp_path / "bpo-7b", RECORD))
    meta = card.data.to_dict()
    assert meta["base_model"] == "llava-hf/llava-1.5-7b-hf" and meta["datasets"] == ["me/bpo-pairs"]
    assert meta["pipeline_tag"] == "image-text-to-text" and meta["library_name"] == "peft"
    assert "base_model:adapter:llava-hf/llava-1.5-7b-hf" in meta["tags"]
    assert "[None]" not in card.text and "text-generation" not in card.content
    assert "export v1.0.0, 166875 rows of split `train`" in card.text
    assert "steps 10430, learning rate 2e-06, beta 0.1, effective batch 32, LoRA r 64, alpha 256" in card.text
    assert "Bootstrapped Preference Optimization" in card.text and "ECCV 2024" in card.text
    assert 'PeftModel.from_pretrained(base, "bpo-7b")' in card.text


def test_local_paths_stay_out_of_the_hub_metadata_but_are_named(tmp_path):
    base = tmp_path / "llava-local"
    base.mkdir()
    export = tmp_path / "export"
    export.mkdir()
    record = {**RECORD, "model": str(base), "data": {"dataset": str(export), "rows": 8}}
    card = ModelCard.load(write_model_card(tmp_path / "merged", record, merged_from=str(tmp_path / "run")))
    meta = card.data.to_dict()
    assert "base_model" not in meta and "datasets" not in meta  # the Hub refuses paths there
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert f"**Base model:** `{base}`" in card.text and f"**Dataset:** `{export}`" in card.text
    assert "adapter `run` folded into its weights" in card.text
    assert 'LlavaForConditionalGeneration.from_pretrained("merged")' in card.text
