"""The one exception the CLI turns into a readable message instead of a traceback."""


class EvalError(Exception):
    """A benchmark cannot be run or scored as asked; the message says which file or flag to fix."""
