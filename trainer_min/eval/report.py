"""``bpo-train report``: run folders side by side in the shape of the BPO paper's Table 2.

Columns: MM-Vet per capability and total, Object HalBench Resp. and Obj. (lower is better) and
LLaVA-Bench in-the-wild overall; one row per run folder, then the paper's reference rows
(``resources/paper_table2.json``; a cell the paper's text could not confirm shows "–"). The notes
under the table say what each number rests on: judge, dates, runs, failures, extraction mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer_min.eval.common import resource_text
from trainer_min.eval.errors import EvalError
from trainer_min.eval.run import BENCHMARKS, RESULTS_FILE

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
MISSING = "–"


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
    prompt = results.get("settings", {}).get("prompt", "builtin")
    prompt_note = "this project's grader wording" if prompt == "builtin" else f"grader prompt {prompt}"
    row.notes.append(
        f"MM-Vet: {metrics['items']} items, {runs} run(s), {prompt_note}, {_judge_note(results)}, "
        f"{metrics.get('scored_zero_unparsable', 0)} grade(s) unparsable after five tries (scored 0)"
    )


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
    how = _judge_note(results) if metrics["extract"] == "judge" else "rule-based extraction"
    row.notes.append(
        f"Object HalBench: {metrics['responses']} of {metrics['items']} responses scored "
        f"({metrics['extraction_failures']} extraction failures), {how}, "
        f"CHAIRs {_number(metrics['chair_s'])}, recall {_number(metrics['recall'])}"
    )


def reference_rows() -> tuple[list[Row], str]:
    """The paper's rows (cells it could not confirm stay empty) and their source line."""
    table = json.loads(resource_text("paper_table2.json"))
    rows = [Row(r["name"], {k: _number(v) for k, v in r["values"].items()}) for r in table["rows"]]
    return rows, table["source"]


def render(runs: list[Row]) -> str:
    """The Markdown table, then one line of notes per run."""
    references, source = reference_rows()
    header = ["Model", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in [*runs, *references]:
        lines.append("| " + " | ".join([row.name, *(row.values.get(k, MISSING) for k, _ in COLUMNS)]) + " |")
    lines.append("")
    for row in runs:
        lines.append(f"- **{row.name}**: " + "; ".join(row.notes) + ".")
    lines.append(f"- Reference rows: {source}.")
    if any(len(r.values) < len(COLUMNS) for r in references):
        lines.append(
            f"- {MISSING} in a reference row: that number could not be confirmed from the paper's text; "
            "add it to trainer_min/eval/resources/paper_table2.json."
        )
    return "\n".join(lines) + "\n"


def write_report(run_dirs: list[Path], to: Path) -> str:
    text = render([load_run(Path(d)) for d in run_dirs])
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text(text, encoding="utf-8")
    return text
