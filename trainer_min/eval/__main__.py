"""``python -m trainer_min.eval eval|report``: the benchmark commands without the rest of bpo-train."""

from trainer_min.eval.cli import app

app()
