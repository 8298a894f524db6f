"""The BPO paper's benchmarks (MM-Vet, LLaVA-Bench in-the-wild, Object HalBench), scored as the
official scripts score them, with any OpenAI-compatible judge whose every call is cached."""

from trainer_min.eval.errors import EvalError
from trainer_min.eval.judge import Judge, JudgeError, JudgeRequest
from trainer_min.eval.report import write_report
from trainer_min.eval.run import BENCHMARKS, EvalOptions, run_eval

__all__ = [
    "BENCHMARKS",
    "EvalError",
    "EvalOptions",
    "Judge",
    "JudgeError",
    "JudgeRequest",
    "run_eval",
    "write_report",
]
