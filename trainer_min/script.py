"""What ``bpo-train dpo|sft`` and ``python -m trainer_min.dpo|sft`` run: cheap checks, TRL's parser, train.

The parser is TRL's (``TrlParser`` over the objective's three dataclasses), built by the objective's module;
this module only orders the steps so that a wrong ``--dataset`` or ``--config`` is reported before TRL loads
(seconds) and a wrong setting before the model loads (minutes), each as one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer_min.data import DataError, check_dataset_location

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
    try:
        if "-h" not in argv and "--help" not in argv:
            precheck(argv)
    except (DataError, FileNotFoundError) as err:
        return _fail(err)

    from trainer_min.config import UsageError
    from trainer_min.training import train

    try:
        run = build(*make_parser(prog).parse(argv))
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except (UsageError, DataError, FileExistsError, FileNotFoundError) as err:
        return _fail(err)
    trainer = train(run)
    if trainer.is_world_process_zero():
        out = run.training_args.output_dir
        print(f"trained {trainer.state.global_step} steps; the run is in {out}")
        print(f"figure 7:  bpo-train plot {out} --to {out}/figure7.png")
        print(f"merge:     bpo-train merge --adapter {out} --to {out}-merged")
    return 0


def precheck(argv: Sequence[str]) -> None:
    """The --config file and the --dataset folder (flag, else config key) exist; no TRL import."""
    config_path = _value(argv, "--config")
    dataset: Any = _value(argv, "--dataset")
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise FileNotFoundError(f"--config {config_path}: no such file")
        if dataset is None:
            import yaml

            try:
                settings = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                raise DataError(f"--config {config_path} is not valid YAML: {err}") from err
            dataset = settings.get("dataset") if isinstance(settings, dict) else None
    if dataset is not None:
        check_dataset_location(str(dataset))


def _value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag VALUE`` or ``flag=VALUE`` in ``argv`` (the last one given), else None."""
    found = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2
