"""LoRA DPO on the tiny LLaVA with stock TRL: it learns the preference, logs it, resumes, plots Figure 7.

The behavioural checks train 30 steps on 8 fixed pairs whose chosen and rejected answers differ
completely, with a learning rate the tiny random model needs (5e-3), and measure the answers'
log-probabilities with the model itself before and after, not only through TRL's own metrics.
"""

from __future__ import annotations

import json
from statistics import mean
from types import SimpleNamespace

import pytest
import yaml
from test_trainer_data import build_export
from transformers import TrainerCallback
from typer.testing import CliRunner

from trainer_min.cli import app
from trainer_min.config import TrainConfig
from trainer_min.data import load_pairs, select_pairs
from trainer_min.dpo import build_dpo, train_dpo
from trainer_min.logprobs import answer_logprobs, read_log
from trainer_min.plot import interval_means, plot_runs

STEPS = 30


def cpu_config(export, model, out, **overrides) -> TrainConfig:
    """The paper's settings except what a CPU run on the tiny model needs."""
    values = {
        "dataset": str(export),
        "model": str(model),
        "output_dir": str(out),
        "learning_rate": 5e-3,
        "lora_r": 8,  # alpha / r = 4 as in the paper; r = 64 on a 64-wide model takes 8x larger steps
        "lora_alpha": 32,
        "max_steps": STEPS,
        "bf16": False,
        "gradient_checkpointing": False,
        "save_steps": 1000,
    }
    return TrainConfig.for_objective("dpo", **{**values, **overrides})


def load_base(model_dir):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(model_dir), AutoProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("dpo-data"), units=4)  # 8 pairs


@pytest.fixture(scope="module")
def dpo(export, smoke_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "run"
    pairs = load_pairs(str(export))
    base, processor = load_base(smoke_model_dir)
    before = {c: answer_logprobs(base, processor, pairs, c) for c in ("chosen", "rejected")}
    trainer = train_dpo(cpu_config(export, smoke_model_dir, out))
    after = {c: answer_logprobs(trainer.model, processor, pairs, c) for c in ("chosen", "rejected")}
    objective, rows = read_log(out)
    return SimpleNamespace(
        out=out, trainer=trainer, before=before, after=after, objective=objective, rows=rows
    )


def test_dpo_widens_the_reward_margin(dpo):
    assert dpo.objective == "dpo" and [row["step"] for row in dpo.rows] == list(range(1, STEPS + 1))
    margins = [row["rewards/margins"] for row in dpo.rows]
    assert mean(margins[:3]) < 0.1  # the adapter starts at zero: policy = reference
    assert mean(margins[-3:]) > mean(margins[:3]) + 1.0
    assert all(row["rewards/accuracies"] == 1.0 for row in dpo.rows[-5:])


def test_dpo_pushes_the_rejected_answer_down_relative_to_the_chosen(dpo):
    logged_gap = [row["logps/chosen"] - row["logps/rejected"] for row in dpo.rows]
    assert mean(logged_gap[-3:]) > mean(logged_gap[:3]) + 10.0
    # measured with the model itself, pair by pair, before and after training
    for i in range(len(dpo.before["chosen"])):
        gap_before = dpo.before["chosen"][i].total - dpo.before["rejected"][i].total
        gap_after = dpo.after["chosen"][i].total - dpo.after["rejected"][i].total
        assert gap_after > gap_before + 10.0, i
    assert mean(s.total for s in dpo.after["rejected"]) < mean(s.total for s in dpo.before["rejected"]) - 5.0


def test_the_run_directory_holds_adapter_processor_and_record(dpo):
    files = {p.name for p in dpo.out.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "processor_config.json",
        "tokenizer.json",
    } <= files
    record = json.loads((dpo.out / "training_config.json").read_text())
    assert record["objective"] == "dpo" and record["global_step"] == STEPS
    assert record["settings"]["beta"] == 0.1 and record["settings"]["lora_r"] == 8
    assert record["data"]["rows"] == 8 and record["data"]["version"] == "v0.0.1-test"
    assert record["resolved"]["effective_batch_size"] == 4 and record["resolved"]["max_length"] is None
    assert record["lora"]["modules_to_save"] == ["multi_modal_projector"]
    assert record["versions"]["trl"] and record["versions"]["peft"]
    assert "authors' scripts/finetune_bpo.sh" in record["sources_of_defaults"]["learning_rate"]


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

    run = build_dpo(cpu_config(export, smoke_model_dir, tmp_path / "run", freeze_projector=freeze_projector))
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

    # the GPU settings (bf16 weights, gradient checkpointing) with the paper's lr, on CPU
    cfg = cpu_config(
        export,
        smoke_model_dir,
        tmp_path / "run",
        bf16=True,
        gradient_checkpointing=True,
        learning_rate=2e-6,
        warmup_ratio=0.0,
        max_steps=2,
        per_device_train_batch_size=2,
    )
    run = build_dpo(cfg)
    model = run.trainer.model
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    projector = {name: p.detach().clone() for name, p in trainable.items() if "multi_modal_projector" in name}
    train(run)
    for name, before in projector.items():  # in bf16 most of these 2e-6 updates would round away
        changed = (trainable[name].detach() != before).float().mean().item()
        assert changed > 0.9, (name, changed)


def test_the_cli_takes_a_yaml_config_whose_keys_are_the_flags(export, smoke_model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": str(export),
                "model": str(smoke_model_dir),
                "lora-r": 16,
                "lora-alpha": 32,
                "max-steps": 50,
                "bf16": False,
                "gradient-checkpointing": False,
            }
        )
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["dpo", "--config", str(config), "--output-dir", str(out), "--max-steps", "1", "--max-samples", "4"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training_config.json").read_text())
    assert record["settings"]["lora_r"] == 16  # from the file
    assert record["settings"]["max_steps"] == 1 and record["global_step"] == 1  # the command line wins
    assert record["settings"]["lora_alpha"] == 32 and record["settings"]["beta"] == 0.1  # neither: defaults

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
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "trainer_min.dpo", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "python -m trainer_min.dpo [OPTIONS]" in result.stdout and "--beta" in result.stdout


def test_the_cli_names_a_bad_yaml_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lora_rank: 16\n")
    result = CliRunner().invoke(app, ["dpo", "--config", str(config), "--dataset", "x", "--output-dir", "y"])
    assert result.exit_code == 2 and "unknown setting 'lora_rank'" in result.output


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
    first = train_dpo(
        cpu_config(export, smoke_model_dir, out, max_steps=4, save_steps=2), callbacks=[StopAt(2)]
    )
    assert first.state.global_step == 2 and (out / "checkpoint-2").is_dir()
    with pytest.raises(FileExistsError, match="--resume-from-checkpoint last"):
        train_dpo(cpu_config(export, smoke_model_dir, out, max_steps=4, save_steps=2))

    seen = StepsSeen()
    resumed = train_dpo(
        cpu_config(export, smoke_model_dir, out, max_steps=4, save_steps=2, resume_from_checkpoint="last"),
        callbacks=[seen],
    )
    assert resumed.state.global_step == 4
    assert seen.steps == [3, 4]  # continued from step 2, not from 0
    _, rows = read_log(out)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert json.loads((out / "training_config.json").read_text())["resumed_from"] == "last"


def test_figure_7_is_drawn_from_the_run_log(dpo, tmp_path):
    png = plot_runs([dpo.out], tmp_path / "fig.png", bins=6)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    result = CliRunner().invoke(app, ["plot", str(tmp_path), "--to", str(tmp_path / "none.png")])
    assert result.exit_code == 2 and "logprobs.csv does not exist" in result.output


def test_interval_means_use_equal_count_intervals_with_std_or_sem():
    steps, values = [1, 2, 3, 4, 5, 6], [1.0, 3.0, 2.0, 4.0, 10.0, float("nan")]
    centres, means, stds = interval_means(steps, values, bins=2, error="std")
    assert centres == [1.5, 4.0] and means == [2.0, pytest.approx(16 / 3)]
    sample_std = (((10 / 3) ** 2 + (4 / 3) ** 2 + (14 / 3) ** 2) / 2) ** 0.5  # of 2, 4, 10 (the NaN skipped)
    assert stds[0] == pytest.approx(2**0.5) and stds[1] == pytest.approx(sample_std)
    _, _, sems = interval_means(steps, values, bins=2, error="sem")
    assert sems[0] == pytest.approx(1.0) and sems[1] == pytest.approx(stds[1] / 3**0.5)
