"""Where a command ends: an expected failure is one ``error:`` line and exit code 2; a bug keeps its trace.

Expected failures are the ones a user fixes by changing the command or the machine: a bad flag value, a
missing file or folder, a model id that is unknown, gated or not cached offline, a device this machine does
not have, a judge server that does not answer, an optional package that is not installed. Each becomes one
line on stderr that names what failed and the next step. ``BPO_DEBUG=1`` (or ``bpo-train --debug CMD``)
shows their tracebacks too. Anything else is a bug and is raised as it is.

Every entry point goes through here: the ``bpo-train`` typer app and ``python -m trainer_min.eval`` by
:class:`GuardedGroup`, ``python -m trainer_min.dpo|sft`` by :func:`guarded`.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.core import TyperGroup

DEBUG_ENV = "BPO_DEBUG"
EXIT_USAGE = 2
# Optional packages by the `bpo-data[extra]` that installs them; the command's own extra is named first.
EXTRAS = {
    "train": ("trl", "peft", "accelerate", "matplotlib"),
    "eval": ("textblob", "peft"),
}
# click's usage and base exceptions, from whichever click typer runs on (recent typer versions vendor it).
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
# Paths a user names (or a run writes) that are missing, taken, or not accessible: said in one line.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


class UserError(Exception):
    """A failure the user can fix; the message names what failed and what to do next."""


class InputError(UserError, ValueError):
    """A value given to a command or function that cannot be used (a ValueError for Python callers)."""


def debugging() -> bool:
    """Whether tracebacks of expected failures are wanted (``BPO_DEBUG`` set to anything but 0/false)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def missing_package(err: ModuleNotFoundError, extra: str) -> UserError | None:
    """The install line for an optional package this project names, or None (a package it needs always)."""
    name = (err.name or "").split(".")[0]
    ordered = [extra, *(other for other in EXTRAS if other != extra)] if extra in EXTRAS else list(EXTRAS)
    for candidate in ordered:
        if name in EXTRAS[candidate]:
            return UserError(f"{name} is not installed; install it with: pip install 'bpo-data[{candidate}]'")
    return None


def as_user_error(err: BaseException, extra: str) -> UserError | None:
    """The expected form of ``err``, or None when it is a bug."""
    if isinstance(err, UserError):
        return err
    if isinstance(err, ModuleNotFoundError):
        return missing_package(err, extra)
    if isinstance(err, _FILE_ERRORS):
        return UserError(str(err))
    return None


def one_line(message: str) -> str:
    """The message on one line (library errors span several), without a trailing full stop doubled."""
    return re.sub(r"\s*\n\s*", " ", str(message).strip())


def fail(err: BaseException) -> int:
    """Print ``error: ...`` on stderr (plain text: no markup eats ``[train]``) and give the exit code."""
    print(f"error: {one_line(str(err))}", file=sys.stderr)
    return EXIT_USAGE


def guarded(run: Callable[[], int], extra: str = "train") -> int:
    """``run()``'s exit code, or 2 after one ``error:`` line when it fails in an expected way."""
    try:
        return run()
    except Exception as err:
        expected = as_user_error(err, extra)
        if expected is None or debugging():
            raise
        return fail(expected)


def quiet_library_warnings() -> None:
    """Silence the deprecation notices transformers (and TRL, PEFT) print on every run: they concern
    those libraries' next versions, not anything the user can change in this command."""
    for library in ("transformers", "trl", "peft", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{library}(\.|$)")


class GuardedGroup(TyperGroup):
    """A typer command group that ends every command through :func:`guarded` and prints click's own usage
    errors (bad value, unknown option, missing option) as one ``error:`` line too.

    ``extra`` names the `bpo-data[...]` that installs the group's optional packages, ``command_extras``
    the commands that need another one.
    """

    extra = "train"
    command_extras: dict[str, str] = {"eval": "eval", "report": "eval"}

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> int:
            try:
                code = super(GuardedGroup, self).main(
                    args, prog_name, complete_var, standalone_mode=False, **extra
                )
            except _USAGE_ERROR as err:
                if type(err).__name__ == "NoArgsIsHelpError":  # a bare command: its help, as click shows it
                    typer.echo(err.format_message(), err=True)
                    return EXIT_USAGE
                command = err.ctx.command_path if err.ctx is not None else self.name
                message = one_line(err.format_message()).replace("Value error, ", "")
                raise UserError(f"{message} (see `{command} --help`)") from err
            except _CLICK_ERROR as err:
                raise UserError(err.format_message()) from err
            except typer.Abort:
                return 130
            return code if isinstance(code, int) else 0

        called = next((a for a in (sys.argv[1:] if args is None else args) if a in self.commands), None)
        code = guarded(run, self.command_extras.get(called, self.extra))
        if standalone_mode:
            sys.exit(code)
        return code


class EvalGroup(GuardedGroup):
    """The group of ``python -m trainer_min.eval``: its optional packages come with `bpo-data[eval]`."""

    extra = "eval"


def enable_debug(value: bool) -> None:
    """The ``--debug`` option of a command group: later expected failures show their tracebacks."""
    if value:
        os.environ[DEBUG_ENV] = "1"
