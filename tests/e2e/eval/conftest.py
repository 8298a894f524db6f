"""End-to-end evaluation fixtures; the tiny LLaVA (``smoke_model_dir``) comes from tests/conftest.py."""

from __future__ import annotations

import pytest
from support.eval_data import build_llava_bench, build_mmvet, build_objhal


@pytest.fixture
def benchmark_data(tmp_path):
    """A --data folder holding the three tiny benchmarks."""
    root = tmp_path / "data"
    build_mmvet(root / "mmvet")
    build_llava_bench(root / "llava-bench")
    build_objhal(root / "objhal")
    return root
