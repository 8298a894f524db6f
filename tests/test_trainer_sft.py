"""The SFT baseline on the tiny LLaVA: it raises the ground truth's log-prob, and logs exactly that."""

from __future__ import annotations

import json
from statistics import mean
from types import SimpleNamespace

import pytest
from test_trainer_data import build_export

from trainer_min.config import TrainConfig
from trainer_min.data import as_sft, load_pairs
from trainer_min.logprobs import answer_logprobs, read_log
from trainer_min.plot import plot_runs
from trainer_min.sft import train_sft

STEPS = 16


@pytest.fixture(scope="module")
def sft(smoke_model_dir, tmp_path_factory):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    base_dir = tmp_path_factory.mktemp("sft")
    export = build_export(base_dir / "data", units=4)  # 8 pairs, 4 units
    out = base_dir / "run"
    rows = as_sft(load_pairs(str(export)))
    base = LlavaForConditionalGeneration.from_pretrained(smoke_model_dir)
    processor = AutoProcessor.from_pretrained(smoke_model_dir)
    before = answer_logprobs(base, processor, rows, column="completion")
    cfg = TrainConfig.for_objective(
        "sft",
        dataset=str(export),
        model=str(smoke_model_dir),
        output_dir=str(out),
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=32,
        max_steps=STEPS,
        bf16=False,
        gradient_checkpointing=False,
        save_steps=1000,
    )
    trainer = train_sft(cfg)
    after = answer_logprobs(trainer.model, processor, rows, column="completion")
    objective, log = read_log(out)
    return SimpleNamespace(out=out, before=before, after=after, objective=objective, log=log)


def test_sft_raises_the_log_prob_of_every_chosen_answer(sft):
    assert len(sft.before) == 4
    for before, after in zip(sft.before, sft.after):
        assert (
            after.per_token > before.per_token + 0.5
        )  # nats per token; the random model starts near ln(vocab)
    logged = [row["chosen_token_logp"] for row in sft.log]
    assert sft.objective == "sft" and len(logged) == STEPS
    assert mean(logged[-3:]) > mean(logged[:3]) + 0.5


def test_the_logged_ground_truth_is_the_token_mean_log_prob(sft):
    # step 1 runs on the untrained adapter and its batch of 4 is every row: -loss is their token-weighted mean
    expected = sum(s.total for s in sft.before) / sum(s.tokens for s in sft.before)
    assert sft.log[0]["chosen_token_logp"] == pytest.approx(expected, rel=1e-4)


def test_sft_trains_one_row_per_unit_and_records_it(sft):
    record = json.loads((sft.out / "training_config.json").read_text())
    assert record["objective"] == "sft" and record["global_step"] == STEPS
    assert record["data"]["rows"] == 4 and record["data"]["pairs_before_one_per_unit"] == 8
    assert "beta" not in record["settings"]
    assert record["sources_of_defaults"]["num_train_epochs"] == "authors' scripts/finetune_sft.sh"
    assert (sft.out / "adapter_model.safetensors").is_file() and (sft.out / "processor_config.json").is_file()


def test_figure_7_draws_the_sft_ground_truth(sft, tmp_path):
    png = plot_runs([sft.out], tmp_path / "sft.png", bins=4, error="sem")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
