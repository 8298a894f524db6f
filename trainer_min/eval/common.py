"""File helpers shared by the benchmarks: strict JSONL reading, JSON(L) writing, bundled resources."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from trainer_min.eval.errors import EvalError


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) for each non-blank line; a line that is not JSON is an EvalError.

    Benchmark files are the user's input, so a bad line stops the run rather than being skipped."""
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise EvalError(f"{path} line {number}: not valid JSON ({err})") from err
            yield number, record


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    with path.open("w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def resource_text(name: str) -> str:
    """A file bundled in ``trainer_min/eval/resources``."""
    return files("trainer_min.eval").joinpath("resources", name).read_text("utf-8")


def load_prompt(prompt_file: Path | None, builtin: str, option: str) -> str:
    """``prompt_file``'s text verbatim, or the bundled resource ``builtin``; ``option`` names the flag."""
    if prompt_file is None:
        return resource_text(builtin)
    try:
        return prompt_file.read_text(encoding="utf-8")
    except OSError as err:
        raise EvalError(f"{option} {prompt_file}: cannot read it ({err.strerror})") from err
