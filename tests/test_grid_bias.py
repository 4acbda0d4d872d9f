"""The training grids move no fit by more than a fraction of its statistical error (engine.problems.gridbias)."""

from __future__ import annotations

import numpy as np
import pytest

from qcf_studio.engine.problems import get_problem, problem_kinds
from qcf_studio.engine.problems.gridbias import parameter_shift

EVENTS = 100_000  # the standard pseudo-data size per observable


@pytest.mark.parametrize("kind", [k for k in problem_kinds() if get_problem(k).event_dims <= 2])
def test_default_training_grid_shifts_parameters_by_under_a_third_of_an_error(kind):
    problem = get_problem(kind)
    shift = parameter_shift(problem, problem.tabulation_grids(), events=EVENTS)
    judged = shift[~np.isnan(shift)]
    assert judged.size >= 2
    assert np.abs(judged).max() < 0.3, dict(zip(problem.param_names, shift.round(3)))


def test_uniform_grid_on_power_laws_is_caught():
    """The check has power: proxy2d on the uniform 128² grid it used before is off by more than one
    standard error (p2: y^0.3 is steep at y = 0.001), and refining the grid shrinks the shift."""
    problem = get_problem("proxy2d")
    coarse = parameter_shift(problem, problem.tabulation_grids(96, spacing="uniform"), events=EVENTS)
    uniform = parameter_shift(problem, problem.tabulation_grids(128, spacing="uniform"), events=EVENTS)
    fine = parameter_shift(problem, problem.tabulation_grids(256, spacing="clustered"), events=EVENTS)
    assert np.abs(uniform).max() > 1.0
    assert np.abs(coarse).max() > 1.3 * np.abs(uniform).max()
    assert np.abs(fine).max() < 0.06


def test_normalisation_parameters_are_not_judged():
    problem = get_problem("proxy1d")
    shift = parameter_shift(problem, problem.tabulation_grids(), events=EVENTS)
    names = dict(zip(problem.param_names, shift))
    assert all(np.isnan(names[n]) for n in problem.normalisation_params)
    assert all(np.isfinite(v) for n, v in names.items() if n not in problem.normalisation_params)


def test_unknown_spacing_is_refused():
    with pytest.raises(ValueError, match="grid spacing must be one of uniform, clustered"):
        get_problem("proxy2d").tabulation_grids(64, spacing="log")
