"""Building engines: the recipe's cpu_threads holds while the engines run, and is undone when they close."""

from __future__ import annotations

import torch

from bpo_data.engines.build import build_engines
from bpo_data.recipe import RunSettings


def test_cpu_threads_hold_while_the_engines_run_and_are_restored_on_close(smoke_model_dir):
    before = torch.get_num_threads()
    try:
        wanted = 1 if before > 1 else 2
        engines = build_engines(
            str(smoke_model_dir), RunSettings(device="cpu", cpu_threads=wanted), 0, vision=True, text=False
        )
        assert torch.get_num_threads() == wanted
        engines.close()
        assert torch.get_num_threads() == before  # an API caller's later work is not left on one thread
        engines = build_engines(str(smoke_model_dir), RunSettings(device="cpu"), 0, vision=True, text=False)
        engines.close()
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
