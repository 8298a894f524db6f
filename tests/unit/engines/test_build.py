"""Building engines: the recipe's cpu_threads reaches torch before the model runs."""

from __future__ import annotations

import torch

from bpo_data.engines.build import build_engines
from bpo_data.recipe import RunSettings


def test_cpu_threads_are_set_for_an_hf_model_and_left_alone_otherwise(smoke_model_dir):
    before = torch.get_num_threads()
    try:
        wanted = 1 if before > 1 else 2
        engines = build_engines(
            str(smoke_model_dir), RunSettings(device="cpu", cpu_threads=wanted), 0, vision=True, text=False
        )
        engines.close()
        assert torch.get_num_threads() == wanted
        torch.set_num_threads(before)
        engines = build_engines(str(smoke_model_dir), RunSettings(device="cpu"), 0, vision=True, text=False)
        engines.close()
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
