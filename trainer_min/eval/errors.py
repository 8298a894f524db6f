"""The one exception the eval commands turn into an ``error:`` line instead of a traceback."""

from trainer_min.errors import UserError


class EvalError(UserError):
    """A benchmark cannot be run or scored as asked; the message says which file or flag to fix."""
