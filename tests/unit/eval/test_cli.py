"""``report``: the table of run folders beside the paper's rows; the CLI's error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trainer_min.eval.cli import app


def write_results(run, benchmark, metrics, **extra):
    (run / benchmark).mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": benchmark,
        "model": "llava-hf/llava-1.5-7b-hf",
        "adapter": None,
        "metrics": metrics,
    }
    payload.update(extra)
    (run / benchmark / "results.json").write_text(json.dumps(payload))


@pytest.mark.slow  # a subprocess, a server or training: seconds
def test_report_table_from_run_folders_beside_the_papers_rows(tmp_path):
    base = tmp_path / "base"
    capabilities = {"rec": 37.3, "ocr": 26.9, "know": 20.0, "gen": 23.7, "spat": 29.6, "math": 9.2}
    mmvet_metrics = {"capabilities": capabilities, "total": 33.3, "std": 0.4, "runs": 3, "items": 218}
    judge = {"model": "gpt-4o", "first_call_at": "2026-01-02T00:00:00+00:00", "last_call_at": None}
    write_results(base, "mmvet", mmvet_metrics, judge=judge, settings={"prompt": "mine.txt"})
    llava = {"scores": {"all": {"score": 64.25}}, "items": 60, "failures": 2, "drop_failed": False}
    write_results(base, "llava-bench", llava, judge=judge)
    objhal = {"resp": 52.0, "obj": 25.55, "chair_s": 48.0, "recall": 60.0, "responses": 300, "items": 300}
    write_results(base, "objhal", {**objhal, "extract": "rules", "extraction_failures": 0}, judge=None)
    partial = tmp_path / "bpo"
    write_results(partial, "llava-bench", {**llava, "failures": 0}, judge=judge)
    write_results(
        partial,
        "objhal",
        {**objhal, "extract": "judge", "extraction_failures": 1},
        judge=judge,
        settings={"prompt": "official"},
    )
    to = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "trainer_min.eval", "report", str(base), str(partial), "--to", str(to)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    table = to.read_text()
    assert table in done.stdout
    lines = table.splitlines()
    assert lines[0].startswith("| Model | MM-Vet Rec | OCR | Know | Gen | Spat | Math | Total | ObjHal Resp.")
    assert "| base | 37.3 | 26.9 | 20.0 | 23.7 | 29.6 | 9.2 | 33.3 ± 0.4 | 52.0 | 25.6 | 64.2 |" in lines
    assert "| bpo | – | – | – | – | – | – | – | 52.0 | 25.6 | 64.2 |" in lines
    # The paper's rows as published (Tables 2 and 3 of Pi et al. 2024); the SFT row has MM-Vet only.
    paper = [line.split(" | ") for line in lines if "(paper" in line]
    assert paper == [
        ["| LLaVA1.5-7B (paper, Table 2)", *"37.0 22.9 16.8 20.2 25.7 7.7 31.7 45.9 23.7".split(), "63.8 |"],
        ["| LLaVA1.5-7B-SFT (paper, Table 3)", *"35.9 28.4 21.0 25.0 33.1 7.7 33.3 – –".split(), "– |"],
        [
            "| LLaVA1.5-7B-BPO (paper, Table 2)",
            *"41.3 29.5 24.8 27.8 34.8 11.5 36.8 31.9 15.1".split(),
            "71.6 |",
        ],
    ]
    assert any("2 unparsable review(s) kept as (-1, -1)" in line for line in lines)
    assert any(
        "read from the text by the official rules" in line and "grader prompt mine.txt" in line
        for line in lines
    )
    assert any("extracted by judge gpt-4o" in line and "official extraction prompt" in line for line in lines)


def test_report_shows_the_13b_and_ablation_rows_on_request(tmp_path):
    run = tmp_path / "run"
    llava = {"scores": {"all": {"score": 70.0}}, "items": 60, "failures": 0, "drop_failed": False}
    write_results(run, "llava-bench", llava, judge=None)
    to = tmp_path / "r.md"
    result = CliRunner().invoke(app, ["report", str(run), "--to", str(to), "--paper-13b", "--paper-ablation"])
    assert result.exit_code == 0, result.output
    names = [
        line.split(" | ")[0].removeprefix("| ") for line in to.read_text().splitlines() if "(paper" in line
    ]
    assert names == [
        "LLaVA1.5-7B (paper, Table 2)",
        "LLaVA1.5-7B-SFT (paper, Table 3)",
        "LLaVA1.5-7B-BPO (paper, Table 2)",
        "LLaVA1.5-13B (paper, Table 2)",
        "LLaVA1.5-13B-SFT (paper, Table 3)",
        "LLaVA1.5-13B-BPO (paper, Table 2)",
        "Self-generated (paper, Table 4, 7B)",
        "Image-Weakened (paper, Table 4, 7B)",
    ]


def test_eval_without_a_judge_model_explains(benchmark_data, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--bench",
            "mmvet",
            "--data",
            str(benchmark_data),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "m",
        ],
    )
    assert result.exit_code == 2
    assert "--judge-model" in result.output


def test_report_of_a_folder_without_results_explains(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--to", str(tmp_path / "r.md")])
    assert result.exit_code == 2
    assert "--out folder of bpo-train eval" in result.output
