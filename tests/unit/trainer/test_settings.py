"""`bpo-train dpo|sft` settings: TRL's own parser and configs, the paper's defaults, YAML, one-line errors.

Nothing here loads a model: each check stops before the model would load (or never builds a trainer).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml
from support.trainer import parse
from typer.testing import CliRunner

from trainer_min import dpo, sft

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "trainer_min" / "configs"


def base_argv(export: Path, out: Path) -> list[str]:
    return ["--dataset", str(export), "--output-dir", str(out)]


def test_the_paper_settings_are_the_defaults(small_export, tmp_path):
    script, args, model = parse(dpo, base_argv(small_export, tmp_path / "run"))
    # Pi et al. 2024 and the authors' scripts/finetune_bpo.sh (see trainer_min/README.md)
    assert (args.learning_rate, args.num_train_epochs, args.beta) == (2e-6, 2.0, 0.1)
    assert str(args.lr_scheduler_type.value) == "cosine" and args.warmup_steps == 0.03
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.weight_decay) == (
        4,
        1,
        0.0,
    )
    assert args.logging_steps == 1 and args.max_length is None and args.report_to == []
    assert (model.model_name_or_path, model.lora_r, model.lora_alpha, model.lora_dropout) == (
        "llava-hf/llava-1.5-7b-hf",
        64,
        256,
        0.05,
    )
    assert model.lora_target_modules is None and script.freeze_projector is False  # LM linears + projector


def test_the_sft_baseline_differs_from_dpo_only_where_the_sft_script_does(small_export, tmp_path):
    from transformers import TrainingArguments

    argv = base_argv(small_export, tmp_path / "run")
    _, dpo_args, dpo_model = parse(dpo, argv)
    _, sft_args, sft_model = parse(sft, argv)
    shared = [f.name for f in fields(TrainingArguments) if f.init]
    differ = {name for name in shared if getattr(dpo_args, name) != getattr(sft_args, name)}
    assert differ == {"num_train_epochs"} and sft_args.num_train_epochs == 1.0
    assert sft_args.completion_only_loss is True and sft_args.max_length is None
    assert asdict(dpo_model) == asdict(sft_model)


@pytest.mark.parametrize("module", [dpo, sft], ids=["dpo", "sft"])
def test_every_field_of_the_trl_configs_is_a_flag(module):
    from transformers import TrainingArguments
    from trl import DPOConfig, ModelConfig, SFTConfig

    parser = module.make_parser()
    objective_config = DPOConfig if module is dpo else SFTConfig
    for config in (TrainingArguments, objective_config, ModelConfig):
        for f in fields(config):
            if f.init:
                assert f"--{f.name}" in parser._option_string_actions, f"{config.__name__}.{f.name}"
                assert f"--{f.name.replace('_', '-')}" in parser._option_string_actions


def test_fields_trainer_min_does_not_declare_are_set_from_the_command_line(small_export, tmp_path):
    script, args, model = parse(
        dpo,
        [
            *base_argv(small_export, tmp_path / "run"),
            *("--optim", "adafactor", "--max-grad-norm", "0.5", "--report-to", "tensorboard"),
            *("--eval-strategy", "steps", "--eval-steps", "5", "--eval-split", "test"),
            *("--loss-type", "ipo", "--push-to-hub", "--hub-model-id", "me/bpo-run"),
            *("--use-rslora", "--lora-target-modules", "q_proj", "v_proj", "--sources", "a,b", "c"),
        ],
    )
    assert str(args.optim.value) == "adafactor" and args.max_grad_norm == 0.5
    assert args.report_to == ["tensorboard"] and args.push_to_hub and args.hub_model_id == "me/bpo-run"
    assert str(args.eval_strategy.value) == "steps" and args.eval_steps == 5 and script.eval_split == "test"
    assert args.loss_type == ["ipo"]
    assert model.use_rslora and model.lora_target_modules == ["q_proj", "v_proj"]
    assert script.sources == ["a", "b", "c"]


def test_a_yaml_config_sets_fields_by_name_and_flags_win(small_export, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": str(small_export),
                "output_dir": str(tmp_path / "run"),
                "lora_r": 16,
                "learning_rate": 1.0e-5,
                "max_steps": 50,
                "negative_types": ["weaken"],
                "max_grad_norm": 0.3,
            }
        )
    )
    script, args, model = parse(dpo, ["--config", str(config), "--max-steps", "1"])
    assert model.lora_r == 16 and args.learning_rate == 1e-5 and args.max_grad_norm == 0.3  # the file
    assert args.max_steps == 1  # the command line wins
    assert script.negative_types == ["weaken"] and args.beta == 0.1  # neither: the default


@pytest.mark.parametrize("module", [dpo, sft], ids=["dpo", "sft"])
def test_the_shipped_configs_write_out_the_defaults(module, small_export, tmp_path):
    argv = base_argv(small_export, tmp_path / "run")
    name = "bpo_dpo.yaml" if module is dpo else "bpo_sft.yaml"
    from_file = parse(module, ["--config", str(CONFIGS / name), *argv])
    defaults = parse(module, argv)
    assert asdict(from_file[0]) == asdict(defaults[0])
    assert from_file[1].to_dict() == defaults[1].to_dict()
    assert asdict(from_file[2]) == asdict(defaults[2])
    assert set(yaml.safe_load((CONFIGS / name).read_text())) >= {
        "learning_rate",
        "lora_r",
        "num_train_epochs",
    }


def test_machine_dependent_settings_are_decided_on_cpu_unless_given(small_export, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the choices made on a machine without a GPU")
    argv = base_argv(small_export, tmp_path / "run")
    _, args, _ = parse(dpo, argv)
    assert (args.bf16, args.gradient_checkpointing, args.dataloader_num_workers, args.use_cpu) == (
        False,
        False,
        0,
        True,
    )
    _, given, _ = parse(
        dpo, [*argv, "--bf16", "true", "--dataloader-num-workers", "2", "--gradient-checkpointing"]
    )
    assert (given.bf16, given.gradient_checkpointing, given.dataloader_num_workers) == (True, True, 2)


def _started_run(tmp_path: Path) -> Path:
    out = tmp_path / "started"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    return out


BAD_SETTINGS = {
    "bad value": (["--learning-rate", "abc"], "--learning-rate"),
    "unknown flag": (["--lora-rank", "16"], "--lora-rank"),
    "bad choice": (["--lr-scheduler-type", "sine"], "--lr-scheduler-type"),
    "max samples": (["--max-samples", "0"], "--max-samples"),
    "no lora": (["--use-peft", "false"], "--use-peft"),
    "eval without split": (["--eval-strategy", "steps"], "--eval-split"),
    "nothing to resume": (["--resume-from-checkpoint", "last"], "holds no checkpoint"),
}


@pytest.mark.parametrize("extra, named", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_a_bad_setting_is_one_error_line_naming_the_flag(
    extra, named, small_export, fake_model, tmp_path, capsys
):
    argv = [*base_argv(small_export, tmp_path / "run"), "--model", str(fake_model), *extra]
    assert dpo.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err


def test_setting_errors_of_files_and_runs_are_one_line_too(small_export, fake_model, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("lora_rank: 16\n")
    cases = [
        (sft.main, [*base_argv(small_export, tmp_path / "a"), "--beta", "0.2"], "--beta"),  # DPO only
        (dpo.main, ["--config", str(config), *base_argv(small_export, tmp_path / "b")], "lora_rank"),
        (dpo.main, ["--dataset", str(small_export)], "--output-dir"),
        (dpo.main, base_argv(small_export, _started_run(tmp_path)), "--resume-from-checkpoint last"),
    ]
    for main, argv, named in cases:
        assert main([*argv, "--model", str(fake_model)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err


def test_a_missing_dataset_folder_is_reported_before_trl_loads(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"dataset: {tmp_path / 'exports' / 'nope'}\noutput_dir: {tmp_path / 'run'}\n")
    for argv in (base_argv(tmp_path / "nope", tmp_path / "run"), ["--config", str(config)]):
        code = (
            "import sys; from trainer_min.dpo import main; "
            f"code = main({argv!r}); print(code, 'trl' in sys.modules, 'torch' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.stdout.split() == ["2", "False", "False"], result.stderr
        assert re.fullmatch(r"error: --dataset \S+nope: no such folder;.*\n", result.stderr)


def test_bpo_train_hands_its_arguments_to_the_modules_parser(tmp_path):
    from trainer_min.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["dpo", "--help"])
    assert shown.exit_code == 0 and "usage: bpo-train dpo" in shown.output
    assert "--max_grad_norm" in shown.output and "--beta" in shown.output
    assert "finetune_bpo.sh]" in shown.output  # each default's source
    shown = runner.invoke(app, ["sft", "--help"])
    assert shown.exit_code == 0 and "--completion_only_loss" in shown.output and "--beta " not in shown.output
    failed = runner.invoke(app, ["dpo", *base_argv(tmp_path / "nope", tmp_path / "run")])
    assert failed.exit_code == 2 and "no such folder" in failed.output


def test_every_default_this_project_sets_is_in_the_readme_with_its_source_table():
    from trainer_min.config import (
        BPODPOConfig,
        BPOModelConfig,
        BPOScriptArguments,
        BPOSFTConfig,
        default_sources,
    )

    readme = (REPO / "trainer_min" / "README.md").read_text(encoding="utf-8")
    for config in (BPOScriptArguments, BPODPOConfig, BPOSFTConfig, BPOModelConfig):
        defaults = {f.name: f.default for f in fields(config)}
        for name in default_sources(config):
            flag = "--" + name.replace("_", "-")
            row = next((line for line in readme.splitlines() if line.startswith(f"| `{flag}`")), None)
            assert row is not None, f"{flag} is missing from the settings table of trainer_min/README.md"
            value = defaults[name]
            cells = re.findall(r"`([^`]*)`", row)
            assert value is None or any(_same(cell, value) for cell in cells), (
                f"{flag}: {value!r} not in {row!r}"
            )


def _same(cell: str, value: object) -> bool:
    if isinstance(value, bool):
        return cell.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(cell) == float(value)
        except ValueError:
            return False
    return cell == str(value)
