"""Fixtures of the trainer's end-to-end tests: an export and a 30-step DPO run on the tiny LLaVA (CPU)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from support.trainer import build_export, cpu_argv, load_base, parse

DPO_STEPS = 30


@pytest.fixture(scope="session")
def export(tmp_path_factory) -> Path:
    """4 units x (weaken, inject) = 8 pairs whose chosen and rejected answers differ completely."""
    return build_export(tmp_path_factory.mktemp("trainer-data"), units=4)


@pytest.fixture(scope="session")
def dpo_run(export, smoke_model_dir, tmp_path_factory) -> SimpleNamespace:
    """30 DPO steps, with the answers' log-probs measured by the model itself before and after."""
    from trainer_min import dpo
    from trainer_min.data import load_pairs
    from trainer_min.logprobs import answer_logprobs, read_log

    out = tmp_path_factory.mktemp("dpo") / "run"
    pairs = load_pairs(str(export))
    base, processor = load_base(smoke_model_dir)
    before = {c: answer_logprobs(base, processor, pairs, c) for c in ("chosen", "rejected")}
    trainer = dpo.train(*parse(dpo, cpu_argv(export, smoke_model_dir, out, "--max-steps", str(DPO_STEPS))))
    after = {c: answer_logprobs(trainer.model, processor, pairs, c) for c in ("chosen", "rejected")}
    objective, rows = read_log(out)
    return SimpleNamespace(
        out=out,
        trainer=trainer,
        before=before,
        after=after,
        objective=objective,
        rows=rows,
        base=smoke_model_dir,
    )
