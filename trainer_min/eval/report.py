"""``bpo-train report``: run folders side by side in the shape of the BPO paper's Table 2, and its rows.

Columns: MM-Vet per capability and total, Object HalBench Resp. and Obj. (lower is better) and
LLaVA-Bench in-the-wild overall; one row per run folder, then the paper's rows for LLaVA-1.5-7B,
its SFT baseline and BPO (``resources/paper_tables.json``: Tables 2, 3 and 4 of Pi et al. 2024 as
published; the SFT rows come from Table 3, which has MM-Vet only), the 13B rows with
``include_13b``, Table 4's negative-source ablation with ``include_ablation``. The notes under the
table say what each number rests on: judge, dates, prompts, runs, failures, how objects were read.
A benchmark whose judge replies all failed shows ``failed`` instead of the number its formula would
still give (LLaVA-Bench's ratio of -1 means is 100.0), and its note says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_min.eval.common import resource_text
from trainer_min.eval.errors import EvalError
from trainer_min.eval.run import BENCHMARKS, RESULTS_FILE, all_failed

COLUMNS = (
    ("rec", "MM-Vet Rec"),
    ("ocr", "OCR"),
    ("know", "Know"),
    ("gen", "Gen"),
    ("spat", "Spat"),
    ("math", "Math"),
    ("total", "Total"),
    ("resp", "ObjHal Resp. ↓"),
    ("obj", "ObjHal Obj. ↓"),
    ("llava_bench", "LLaVA-Bench ↑"),
)
COLUMNS_OF = {
    "mmvet": ("rec", "ocr", "know", "gen", "spat", "math", "total"),
    "objhal": ("resp", "obj"),
    "llava-bench": ("llava_bench",),
}
MISSING = "–"
FAILED = "failed"  # every judge reply of the benchmark failed: no number to show


@dataclass
class Row:
    name: str
    values: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def load_run(run_dir: Path) -> Row:
    """A table row from ``RUN_DIR/<benchmark>/results.json`` for each benchmark the run has."""
    found = {b: run_dir / b / RESULTS_FILE for b in BENCHMARKS if (run_dir / b / RESULTS_FILE).is_file()}
    if not found:
        raise EvalError(
            f"{run_dir}: no {'/'.join(BENCHMARKS)} results here; give the --out folder of bpo-train eval"
        )
    row = Row(run_dir.name)
    for benchmark, path in found.items():
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            metrics = results["metrics"]
        except (ValueError, KeyError) as err:
            raise EvalError(f"{path}: not a results file of bpo-train eval ({err})") from err
        if not row.notes:
            adapter = f", adapter {results['adapter']}" if results.get("adapter") else ""
            row.notes.append(f"model {results.get('model') or '?'}{adapter}")
        if benchmark == "mmvet":
            _mmvet(row, results, metrics)
        elif benchmark == "llava-bench":
            _llava_bench(row, results, metrics)
        else:
            _objhal(row, results, metrics)
        limit = results.get("settings", {}).get("limit")
        if limit:
            row.notes[-1] += f" (--limit {limit}: the first {limit} questions only)"
        failed = all_failed(metrics)
        if failed:
            row.values.update({key: FAILED for key in COLUMNS_OF[benchmark]})
            row.notes[-1] += f"; NO SCORE: {failed}"
    return row


def _judge_note(results: dict[str, Any]) -> str:
    judge = results.get("judge")
    if not judge:
        return "no judge"
    when = judge.get("first_call_at") or "?"
    if judge.get("last_call_at") and judge["last_call_at"] != when:
        when += f" to {judge['last_call_at']}"
    return f"judge {judge['model']} ({when})"


def _mmvet(row: Row, results: dict[str, Any], metrics: dict[str, Any]) -> None:
    for capability, value in metrics["capabilities"].items():
        row.values[capability] = _number(value)
    runs = metrics["runs"]
    row.values["total"] = _number(metrics["total"]) + (f" ± {metrics['std']:.1f}" if runs > 1 else "")
    row.notes.append(
        f"MM-Vet: {metrics['items']} items, {runs} run(s), {_prompt_note(results, 'grader')}, "
        f"{_judge_note(results)}, "
        f"{metrics.get('scored_zero_unparsable', 0)} grade(s) unparsable after five tries (scored 0)"
    )


def _prompt_note(results: dict[str, Any], what: str) -> str:
    prompt = results.get("settings", {}).get("prompt", "official")
    if prompt == "official":
        return f"official {what} prompt"
    if prompt == "builtin":  # results written before the official texts became the defaults
        return f"this project's own {what} wording (not the official text)"
    return f"{what} prompt {prompt}"


def _llava_bench(row: Row, results: dict[str, Any], metrics: dict[str, Any]) -> None:
    row.values["llava_bench"] = _number(metrics["scores"]["all"]["score"])
    handling = "dropped" if metrics["drop_failed"] else "kept as (-1, -1)"
    row.notes.append(
        f"LLaVA-Bench: {metrics['items']} questions, {metrics['failures']} unparsable review(s) {handling}, "
        f"{_judge_note(results)}"
    )


def _objhal(row: Row, results: dict[str, Any], metrics: dict[str, Any]) -> None:
    row.values["resp"] = _number(metrics["resp"])
    row.values["obj"] = _number(metrics["obj"])
    if metrics["extract"] == "judge":
        how = f"objects extracted by {_judge_note(results)}, {_prompt_note(results, 'extraction')}"
    else:
        how = "objects read from the text by the official rules"
    row.notes.append(
        f"Object HalBench: {metrics['responses']} of {metrics['items']} responses scored "
        f"({metrics['extraction_failures']} extraction failures), {how}, "
        f"CHAIRs {_number(metrics['chair_s'])}, recall {_number(metrics['recall'])}"
    )


# (table, row) of the paper shown by default, then with include_13b, then with include_ablation.
_PAPER_7B = (("table2", "LLaVA1.5-7B"), ("table3", "LLaVA1.5-7B-SFT"), ("table2", "LLaVA1.5-7B-BPO"))
_PAPER_13B = (("table2", "LLaVA1.5-13B"), ("table3", "LLaVA1.5-13B-SFT"), ("table2", "LLaVA1.5-13B-BPO"))
_PAPER_ABLATION = (("table4", "Self-generated"), ("table4", "Image-Weakened"))
_TABLE_NUMBERS = {"table2": "Table 2", "table3": "Table 3", "table4": "Table 4, 7B"}


def reference_rows(include_13b: bool = False, include_ablation: bool = False) -> tuple[list[Row], str]:
    """The paper's rows (a cell the paper leaves empty shows –) and their source line."""
    paper = json.loads(resource_text("paper_tables.json"))
    chosen = [*_PAPER_7B]
    if include_13b:
        chosen += _PAPER_13B
    if include_ablation:
        chosen += _PAPER_ABLATION
    rows = []
    for table, name in chosen:
        columns = paper["tables"][table]["columns"]
        values = paper["tables"][table]["rows"][name]
        cells = {column: _number(value) for column, value in zip(columns, values) if value is not None}
        rows.append(Row(f"{name} (paper, {_TABLE_NUMBERS[table]})", cells))
    return rows, paper["source"]


def render(runs: list[Row], include_13b: bool = False, include_ablation: bool = False) -> str:
    """The Markdown table, then one line of notes per run."""
    references, source = reference_rows(include_13b, include_ablation)
    header = ["Model", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in [*runs, *references]:
        lines.append("| " + " | ".join([row.name, *(row.values.get(k, MISSING) for k, _ in COLUMNS)]) + " |")
    lines.append("")
    for row in runs:
        lines.append(f"- **{row.name}**: " + "; ".join(row.notes) + ".")
    lines.append(f"- Paper rows: {source}, as published; {MISSING}: not in that table.")
    return "\n".join(lines) + "\n"


def write_report(
    run_dirs: list[Path], to: Path, include_13b: bool = False, include_ablation: bool = False
) -> str:
    text = render([load_run(Path(d)) for d in run_dirs], include_13b, include_ablation)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text(text, encoding="utf-8")
    return text
