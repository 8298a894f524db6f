"""Fixtures of the evaluation tests: the COCO vocabulary, built once; the three tiny benchmarks."""

from __future__ import annotations

import pytest
from support.eval_data import build_llava_bench, build_mmvet, build_objhal

from bpo_data.coco_objects import coco_vocabulary


@pytest.fixture(scope="session")
def vocab():
    return coco_vocabulary()


@pytest.fixture
def benchmark_data(tmp_path):
    """A --data folder holding the three tiny benchmarks."""
    root = tmp_path / "data"
    build_mmvet(root / "mmvet")
    build_llava_bench(root / "llava-bench")
    build_objhal(root / "objhal")
    return root
