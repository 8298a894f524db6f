"""The SFT baseline on the tiny LLaVA: it raises the ground truth's log-prob, and logs exactly that."""

from __future__ import annotations

import json
from statistics import mean
from types import SimpleNamespace

import pytest
from support.trainer import cpu_argv, load_base, parse

from trainer_min import sft
from trainer_min.data import as_sft, load_pairs
from trainer_min.logprobs import answer_logprobs, read_log
from trainer_min.plot import plot_runs

pytestmark = pytest.mark.slow

STEPS = 16


@pytest.fixture(scope="module")
def sft_run(export, smoke_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    rows = as_sft(load_pairs(str(export)))
    base, processor = load_base(smoke_model_dir)
    before = answer_logprobs(base, processor, rows, column="completion")
    trainer = sft.train(*parse(sft, cpu_argv(export, smoke_model_dir, out, "--max-steps", str(STEPS))))
    after = answer_logprobs(trainer.model, processor, rows, column="completion")
    objective, log = read_log(out)
    return SimpleNamespace(out=out, before=before, after=after, objective=objective, log=log)


def test_sft_raises_the_log_prob_of_every_chosen_answer(sft_run):
    assert len(sft_run.before) == 4
    for before, after in zip(sft_run.before, sft_run.after):
        # nats per token; the random model starts near ln(vocab)
        assert after.per_token > before.per_token + 0.5
    logged = [row["chosen_token_logp"] for row in sft_run.log]
    assert sft_run.objective == "sft" and len(logged) == STEPS
    assert mean(logged[-3:]) > mean(logged[:3]) + 0.5


def test_the_logged_ground_truth_is_the_token_mean_log_prob(sft_run):
    # step 1 runs on the untrained adapter and its batch of 4 is every row: -loss is their token-weighted mean
    expected = sum(s.total for s in sft_run.before) / sum(s.tokens for s in sft_run.before)
    assert sft_run.log[0]["chosen_token_logp"] == pytest.approx(expected, rel=1e-4)


def test_sft_trains_one_row_per_unit_and_records_it(sft_run):
    record = json.loads((sft_run.out / "training_config.json").read_text())
    assert record["objective"] == "sft" and record["global_step"] == STEPS
    assert record["data"]["rows"] == 4 and record["data"]["pairs_before_one_per_unit"] == 8
    assert "beta" not in record["training_arguments"]
    assert record["training_arguments"]["completion_only_loss"] is True
    assert record["sources_of_defaults"]["num_train_epochs"] == "authors' scripts/finetune_sft.sh"
    assert (sft_run.out / "adapter_model.safetensors").is_file()
    assert (sft_run.out / "processor_config.json").is_file()


def test_figure_7_draws_the_sft_ground_truth(sft_run, tmp_path):
    png = plot_runs([sft_run.out], tmp_path / "sft.png", bins=4, error="sem")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
