"""Figure 7's error bars: equal-count intervals of logged steps, sample std or standard error of the mean."""

from __future__ import annotations

import pytest

from trainer_min.plot import interval_means


def test_interval_means_use_equal_count_intervals_with_std_or_sem():
    steps, values = [1, 2, 3, 4, 5, 6], [1.0, 3.0, 2.0, 4.0, 10.0, float("nan")]
    centres, means, stds = interval_means(steps, values, bins=2, error="std")
    assert centres == [1.5, 4.0] and means == [2.0, pytest.approx(16 / 3)]
    sample_std = (((10 / 3) ** 2 + (4 / 3) ** 2 + (14 / 3) ** 2) / 2) ** 0.5  # of 2, 4, 10 (the NaN skipped)
    assert stds[0] == pytest.approx(2**0.5) and stds[1] == pytest.approx(sample_std)
    _, _, sems = interval_means(steps, values, bins=2, error="sem")
    assert sems[0] == pytest.approx(1.0) and sems[1] == pytest.approx(stds[1] / 3**0.5)
