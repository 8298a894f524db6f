"""A shard's pipeline: a readable list of small steps (see ``bpo_data.generate``), each with its stats.

``steps`` holds read → shard → sample → skip done → load images → write, ``make`` the step that makes
negatives;
``filters`` the steps a recipe (or the Python API) adds between making and writing.
"""

from bpo_data.pipeline.filters import Filter, ThresholdFilter
from bpo_data.pipeline.steps import Step, StrictModeError, Work, run_steps

__all__ = ["Filter", "Step", "StrictModeError", "ThresholdFilter", "Work", "run_steps"]
