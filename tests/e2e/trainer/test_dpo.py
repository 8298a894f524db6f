"""LoRA DPO on the tiny LLaVA with stock TRL: it learns the preference, logs it, resumes, plots Figure 7.

The behavioural checks train 30 steps on 8 fixed pairs whose chosen and rejected answers differ
completely, with a learning rate the tiny random model needs (5e-3), and measure the answers'
log-probabilities with the model itself before and after, not only through TRL's own metrics.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from statistics import mean

import pytest
import yaml
from support.trainer import cpu_argv, load_base, parse
from transformers import TrainerCallback
from typer.testing import CliRunner

from trainer_min import dpo
from trainer_min.cli import app
from trainer_min.data import load_pairs, select_pairs
from trainer_min.logprobs import answer_logprobs, read_log
from trainer_min.plot import plot_runs

pytestmark = pytest.mark.slow

STEPS = 30  # the dpo_run fixture's


def test_dpo_widens_the_reward_margin(dpo_run):
    assert dpo_run.objective == "dpo" and [row["step"] for row in dpo_run.rows] == list(range(1, STEPS + 1))
    margins = [row["rewards/margins"] for row in dpo_run.rows]
    assert mean(margins[:3]) < 0.1  # the adapter starts at zero: policy = reference
    assert mean(margins[-3:]) > mean(margins[:3]) + 1.0
    assert all(row["rewards/accuracies"] == 1.0 for row in dpo_run.rows[-5:])


def test_dpo_pushes_the_rejected_answer_down_relative_to_the_chosen(dpo_run):
    logged_gap = [row["logps/chosen"] - row["logps/rejected"] for row in dpo_run.rows]
    assert mean(logged_gap[-3:]) > mean(logged_gap[:3]) + 10.0
    # measured with the model itself, pair by pair, before and after training
    for i in range(len(dpo_run.before["chosen"])):
        gap_before = dpo_run.before["chosen"][i].total - dpo_run.before["rejected"][i].total
        gap_after = dpo_run.after["chosen"][i].total - dpo_run.after["rejected"][i].total
        assert gap_after > gap_before + 10.0, i
    rejected_before = mean(s.total for s in dpo_run.before["rejected"])
    assert mean(s.total for s in dpo_run.after["rejected"]) < rejected_before - 5.0


def test_the_run_directory_holds_adapter_processor_and_record(dpo_run):
    files = {p.name for p in dpo_run.out.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "processor_config.json",
        "tokenizer.json",
    } <= files
    record = json.loads((dpo_run.out / "training_config.json").read_text())
    assert record["objective"] == "dpo" and record["global_step"] == STEPS
    assert record["model"] == str(dpo_run.base)
    assert (
        record["training_arguments"]["beta"] == 0.1 and record["training_arguments"]["learning_rate"] == 5e-3
    )
    assert record["model_config"]["lora_r"] == 8 and record["script_arguments"]["freeze_projector"] is False
    assert record["data"]["rows"] == 8 and record["data"]["version"] == "0.0.1-test"  # export drops the v
    assert record["resolved"]["effective_batch_size"] == 4 and record["resolved"]["max_length"] is None
    assert record["resolved"]["dtype"] == "float32"
    assert record["lora"]["modules_to_save"] == ["multi_modal_projector"]
    assert record["versions"]["trl"] and record["versions"]["peft"]
    assert record["sources_of_defaults"]["learning_rate"] == "authors' scripts/finetune_bpo.sh"
    card = (dpo_run.out / "README.md").read_text()  # ours, not TRL's "fine-tuned version of [None]"
    assert "pipeline_tag: image-text-to-text" in card and "[None]" not in card
    assert f"**Base model:** `{dpo_run.base}`" in card and "**Dataset:**" in card


@pytest.mark.parametrize("freeze_projector", [False, True])
def test_lora_is_on_every_language_model_linear_and_nowhere_else(
    export, smoke_model_dir, tmp_path, freeze_projector
):
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper
    from torch import nn

    base, _ = load_base(smoke_model_dir)
    linear = {name for name, module in base.named_modules() if isinstance(module, nn.Linear)}
    assert any(name.startswith("model.vision_tower") and name.endswith(".q_proj") for name in linear)

    frozen = ["--freeze-projector"] if freeze_projector else []
    run = dpo.build(*parse(dpo, cpu_argv(export, smoke_model_dir, tmp_path / "run", *frozen)))
    model = run.trainer.model.get_base_model()
    lora = {name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}
    assert lora == {name for name in linear if name.startswith("model.language_model.")} and len(lora) == 14
    assert not any("vision_tower" in name for name, _ in model.named_modules() if "lora" in name)
    projector_trainable = [p.requires_grad for p in model.model.multi_modal_projector.parameters()]
    if freeze_projector:
        assert not any(projector_trainable)
        assert not isinstance(model.model.multi_modal_projector, ModulesToSaveWrapper)
    else:
        assert isinstance(model.model.multi_modal_projector, ModulesToSaveWrapper) and any(
            projector_trainable
        )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(
        "vision_tower" in name or "lm_head" in name or "embed_tokens" in name for name in trainable
    )


def test_under_bf16_the_paper_learning_rate_still_moves_the_projector(export, smoke_model_dir, tmp_path):
    import torch

    from trainer_min.training import train

    # the GPU settings (bf16 weights, gradient checkpointing) with the paper's lr and warm-up, on CPU
    gpu_like = ("--bf16", "true", "--gradient-checkpointing", "true", "--learning-rate", "2e-6")
    gpu_like += ("--warmup-steps", "0", "--max-steps", "2", "--per-device-train-batch-size", "2")
    run = dpo.build(*parse(dpo, cpu_argv(export, smoke_model_dir, tmp_path / "run", *gpu_like)))
    model = run.trainer.model
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    projector = {name: p.detach().clone() for name, p in trainable.items() if "multi_modal_projector" in name}
    train(run)
    for name, before in projector.items():  # in bf16 most of these 2e-6 updates would round away
        changed = (trainable[name].detach() != before).float().mean().item()
        assert changed > 0.9, (name, changed)


def test_bpo_train_dpo_takes_a_trl_yaml_config_and_flags_win(export, smoke_model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    settings = {"dataset": str(export), "model_name_or_path": str(smoke_model_dir), "lora_r": 16}
    settings.update(lora_alpha=32, max_steps=50, bf16=False, save_steps=1000, optim="adafactor")
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["dpo", "--config", str(config), "--output-dir", str(out), "--max-steps", "1", "--max-samples", "4"],
    )
    assert result.exit_code == 0, result.output
    assert f"trained 1 step; the run is in {out}" in result.output
    record = json.loads((out / "training_config.json").read_text())
    assert record["model_config"]["lora_r"] == 16 and record["training_arguments"]["optim"] == "adafactor"
    assert record["training_arguments"]["max_steps"] == 1 and record["global_step"] == 1  # the flag wins
    assert record["training_arguments"]["beta"] == 0.1  # neither: the default

    # the logged step-1 log-probs are the answers' summed token log-probs under the base model (batch = all 4)
    selected = select_pairs(load_pairs(str(export)), max_samples=4)
    assert record["data"]["rows"] == 4
    base, processor = load_base(smoke_model_dir)
    _, (row,) = read_log(out)
    for column in ("chosen", "rejected"):
        expected = mean(s.total for s in answer_logprobs(base, processor, selected, column))
        assert row[f"logps/{column}"] == pytest.approx(expected, rel=1e-4)
    assert row["rewards/margins"] == 0.0


def test_python_m_trainer_min_dpo_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "trainer_min.dpo", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m trainer_min.dpo" in result.stdout
    assert "--beta" in result.stdout and "--max_grad_norm" in result.stdout


def test_an_eval_split_is_evaluated_on_the_eval_strategy(export, smoke_model_dir, tmp_path):
    with_test = tmp_path / "export"
    shutil.copytree(export, with_test)
    (train_file,) = (with_test / "data").glob("train-*.parquet")
    shutil.copy(train_file, with_test / "data" / "test-00000-of-00001.parquet")
    evaluating = ("--eval-strategy", "steps", "--eval-steps", "1", "--eval-split", "test", "--max-steps", "2")
    trainer = dpo.train(*parse(dpo, cpu_argv(with_test, smoke_model_dir, tmp_path / "run", *evaluating)))
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert [entry["step"] for entry in evals] == [1, 2]
    assert all("eval_rewards/margins" in entry for entry in evals)
    record = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert record["data"]["eval"]["split"] == "test" and record["data"]["eval"]["rows"] == 8
    _, rows = read_log(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]  # eval logs do not enter logprobs.csv


class StopAt(TrainerCallback):
    """Stop training after a given step, as a killed job would (its checkpoint is already written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class StepsSeen(TrainerCallback):
    def __init__(self):
        self.steps: list[int] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.steps.append(state.global_step)


def test_a_run_resumes_from_its_checkpoint(export, smoke_model_dir, tmp_path):
    out = tmp_path / "run"
    argv = cpu_argv(export, smoke_model_dir, out, "--max-steps", "4", "--save-steps", "2")
    first = dpo.train(*parse(dpo, argv), callbacks=[StopAt(2)])
    assert first.state.global_step == 2 and (out / "checkpoint-2").is_dir()
    with pytest.raises(FileExistsError, match="--resume-from-checkpoint last"):
        dpo.build(*parse(dpo, argv))

    seen = StepsSeen()
    resumed = dpo.train(*parse(dpo, [*argv, "--resume-from-checkpoint", "last"]), callbacks=[seen])
    assert resumed.state.global_step == 4
    assert seen.steps == [3, 4]  # continued from step 2, not from 0
    _, rows = read_log(out)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert json.loads((out / "training_config.json").read_text())["resumed_from"] == str(out / "checkpoint-2")


def test_figure_7_is_drawn_from_the_run_log(dpo_run, tmp_path):
    png = plot_runs([dpo_run.out], tmp_path / "fig.png", bins=6)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    result = CliRunner().invoke(app, ["plot", str(tmp_path), "--to", str(tmp_path / "none.png")])
    assert result.exit_code == 2 and "logprobs.csv does not exist" in result.output
