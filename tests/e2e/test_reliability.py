"""The reliability suite through the real CLI: every kind of bad input handled with a reason, no crash,
no record lost or written twice, nothing private or secret written anywhere (RELIABILITY.md's table).

Each scenario of ``support.adversarial`` runs as one test; ``python tests/support/adversarial.py``
runs them all and prints the table.
"""

from __future__ import annotations

import os

import pytest
from support.adversarial import SCENARIOS, run_suite

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path, smoke_model_dir) -> dict:
    cache = tmp_path / "cache"
    cache.mkdir()
    os.symlink(smoke_model_dir, cache / "smoke-llava-v1")
    env = {**os.environ, "BPO_DATA_CACHE": str(cache)}
    env.pop("OPENAI_API_KEY", None)
    return env


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_bad_input_is_handled_with_nothing_lost_duplicated_or_leaked(tmp_path, env, scenario):
    tally = run_suite(tmp_path / "runs", env, only=[scenario])
    assert tally.rows, "the scenario tried nothing"
    assert not tally.failures(), "\n".join(tally.failures())
    for row in tally.rows.values():
        assert row.handled == row.tried and not (row.crashes or row.lost or row.duplicated or row.leaks), row
