"""What ``bpo-train dpo|sft`` and ``python -m trainer_min.dpo|sft`` run: cheap checks, TRL's parser, train.

The parser is TRL's (``TrlParser`` over the objective's three dataclasses), built by the objective's module;
this module only orders the steps so that a wrong ``--dataset``, ``--config`` or ``--output-dir`` is reported
before TRL loads (seconds) and a wrong setting, model id or data filter before the model loads (minutes), each
as one ``error:`` line and exit code 2 (``trainer_min.errors``). What a pipe wants (the run's folder) goes to
stdout, the next steps to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer_min.data import DataError, check_dataset_location
from trainer_min.errors import guarded, quiet_library_warnings

if TYPE_CHECKING:
    from trainer_min.config import TrainingParser
    from trainer_min.training import Run


def run_script(
    argv: Sequence[str] | None,
    prog: str,
    make_parser: Callable[[str], TrainingParser],
    build: Callable[..., Run],
) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), build the run, train it; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_library_warnings()
    return guarded(lambda: _run(argv, prog, make_parser, build), extra="train")


def _run(
    argv: list[str], prog: str, make_parser: Callable[[str], TrainingParser], build: Callable[..., Run]
) -> int:
    if "-h" not in argv and "--help" not in argv:
        precheck(argv)
    from trainer_min.training import train

    try:
        parsed = make_parser(prog).parse(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    run = build(*parsed)
    trainer = train(run)
    if trainer.is_world_process_zero():
        out = run.training_args.output_dir
        steps = trainer.state.global_step
        print(f"trained {steps} step{'' if steps == 1 else 's'}; the run is in {out}")
        print(f"figure 7:  bpo-train plot {out} --to {out}/figure7.png", file=sys.stderr)
        print(f"merge:     bpo-train merge --adapter {out} --to {out}-merged", file=sys.stderr)
    return 0


def precheck(argv: Sequence[str]) -> None:
    """Before TRL loads: the --config file, the --dataset folder, the --output-dir and the model (flag, else
    config key, else the default): each in a second, where loading TRL takes many."""
    from trainer_min.hub import DEFAULT_MODEL, check_model
    from trainer_min.training import check_output_dir

    config_path = _value(argv, "config")
    settings: dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise FileNotFoundError(f"--config {config_path}: no such file")
        import yaml

        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise DataError(f"--config {config_path} is not valid YAML: {err}") from err
        settings = loaded if isinstance(loaded, dict) else {}

    def given(name: str) -> Any:
        value = _value(argv, name)
        return settings.get(name) if value is None else value

    dataset = given("dataset")
    if dataset is not None:
        check_dataset_location(str(dataset))
    out = given("output_dir")
    if out is not None:
        resume = given("resume_from_checkpoint")
        check_output_dir(str(out), None if resume is None else str(resume))
    model = _value(argv, "model") or given("model_name_or_path") or DEFAULT_MODEL
    revision = given("model_revision")
    check_model(str(model), "--model-name-or-path", None if revision is None else str(revision))


def _value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` (dashes or underscores; the last one given)."""
    flags = {"--" + name, "--" + name.replace("_", "-")}
    found = None
    for index, arg in enumerate(argv):
        if arg in flags and index + 1 < len(argv):
            found = argv[index + 1]
        elif "=" in arg and arg.split("=", 1)[0] in flags:
            found = arg.split("=", 1)[1]
    return found
