"""The standard error of a CHAIRi gap between two models: scenes are the samples, and they are paired."""

from __future__ import annotations

import pytest

from trainer_min.world_repro import chair_i_error


def _model(*per_description: tuple[int, int]) -> dict:
    """Metrics holding only what the error reads: [mentions, hallucinated] per violating description."""
    return {"world": {"eval_violating": {"chair": {"per_description": [list(d) for d in per_description]}}}}


BASE = _model((8, 1), (8, 1), (8, 1), (8, 1))


def test_a_model_against_itself_has_no_error():
    assert chair_i_error(BASE, BASE) == 0.0


def test_hallucinations_crowded_into_one_scene_are_less_certain_than_the_same_number_spread_out():
    spread = _model((8, 0), (8, 2), (8, 0), (8, 2))
    crowded = _model((8, 0), (8, 4), (8, 0), (8, 0))
    # both have 4 of 32 mentions wrong; a binomial error over mentions could not tell them apart
    assert chair_i_error(BASE, crowded) > chair_i_error(BASE, spread) > 0


def test_four_times_the_same_scenes_cut_the_error_by_about_half():
    other = _model((6, 0), (9, 3), (7, 1), (8, 0))
    many_base = _model(*[tuple(d) for d in BASE["world"]["eval_violating"]["chair"]["per_description"]] * 4)
    many_other = _model(*[tuple(d) for d in other["world"]["eval_violating"]["chair"]["per_description"]] * 4)
    few, many = chair_i_error(BASE, other), chair_i_error(many_base, many_other)
    # four times the squared gaps over n(n-1): 4 * 3 -> 16 * 15
    assert many == pytest.approx(few * (4 * 4 * 3 / (16 * 15)) ** 0.5)
    assert 0.4 < many / few < 0.5


def test_models_measured_on_different_scenes_have_no_paired_error():
    assert chair_i_error(BASE, _model((8, 1), (8, 1))) is None
    assert chair_i_error(BASE, {}) is None
