"""Reduced closure tests beyond proxy1d (the full ones: sample_data/*.yaml)."""

from __future__ import annotations

import numpy as np
import pytest

from qcf_studio.engine.results import build_results
from qcf_studio.engine.run.runner import measured_data, reference_fit, train_member
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import parse_spec


def _closure(raw: dict, members: int = 2):
    spec = parse_spec(raw)
    data = measured_data(spec)
    results = [train_member(spec, m, data, HistorySink()) for m in range(members)]
    reference = reference_fit(spec, data) if spec.training.mle_reference else None
    return build_results(spec, data, results, 1.0, reference)


@pytest.mark.slow
def test_reduced_gauss6_closure_with_an_mle_reference():
    ds = _closure(
        {
            "problem": {"kind": "gauss6", "events": 5000, "seed": 2},
            "training": {"steps": 400, "events_per_param": 16, "mle_reference": True},
        }
    )
    assert ds.attrs["closure_max_abs_pull"] <= 3.0
    assert ds.attrs["closure_max_qcf_dev_sigma"] <= 2.0
    # The likelihood reference closes on the same data with errors of 1/sqrt(Fisher information).
    mle_pull = (ds["params_mle"] - ds["params_true"]) / ds["params_mle_err"]
    assert float(np.abs(mle_pull).max()) <= 3.0
    c = np.array([(1, 1), (-2, 2), (-9.46, 1.67), (4.20, 0.74), (0.921, 1.98), (-1.10, 1.90)])
    np.testing.assert_allclose(ds["params_mle_err"], np.sqrt(np.diag(np.linalg.inv(5000 * c.T @ c))), rtol=1e-3)
    assert float(ds["error_ratio"].min()) > 0 and "closure_max_error_ratio" in ds.attrs
    # A reference fit without errors (HESSE failed at a bound) leaves the ratio unjudged, not the closure failed.
    from qcf_studio.engine.problems import get_problem
    from qcf_studio.engine.results import closure_metrics, closure_variables

    no_errors = ds.assign(params_mle_err=ds["params_mle_err"] * np.nan)
    no_errors = no_errors.assign(closure_variables(no_errors))
    judged = closure_metrics(no_errors, get_problem("gauss6").core_range)
    assert "closure_max_error_ratio" not in judged
    assert judged["closure_passed"] == 1  # the pulls and the QCF pass (above); only a ratio could have failed it


@pytest.mark.slow
def test_reduced_gauss6_bootstrap_ensemble_has_errors_near_the_statistical_limit():
    """Bootstrap members' spread estimates the statistical error; the generators' spread does not."""
    ds = _closure(
        {
            "problem": {"kind": "gauss6", "events": 5000, "seed": 2},
            "training": {
                "steps": 800,
                "events_per_param": 16,
                "mle_reference": True,
                "noise_final": 0.0,
                "average_last": 0.5,
            },
            "ensemble": {"members": 8, "bootstrap": True},
        },
        members=8,
    )
    assert ds.attrs["uncertainty"] == "bootstrap"
    # In units of an 8-member spread, parameter deviations follow Student's t with 7 degrees of freedom: 95%
    # within 2.36. The QCF's is a maximum over 181 points of six Gaussians, and at each peak the members'
    # spread vanishes to first order, so it has a longer tail: with 4 members data seeds 1-6 gave 0.83, 4.81,
    # 1.13, 3.33, 0.95, 1.35 (parameter pulls all ≤ 1.15); with 8, seeds 2 and 4 gave 2.49 and 1.03.
    assert ds.attrs["closure_max_abs_pull"] <= 2.36
    assert ds.attrs["closure_max_qcf_dev_sigma"] <= 3.5
    ratio = ds["error_ratio"].values
    assert np.all((ratio > 0.3) & (ratio < 2.5)), ratio  # 8 members: the spread itself is uncertain by ~27%
    np.testing.assert_array_equal(ds["params_pred_std"], 0.0)  # members ended as point estimates


@pytest.mark.slow
def test_reduced_proxy2d_bootstrap_closes_its_qcf():
    """proxy2d, 4 bootstrap members of 800 steps on 100k events (the full test: closure-2d.yaml, 4 × 12000).

    The QCF and p0-p3 close; the coupling p4 is left out of the pulls: short runs put it +0.2 above the
    likelihood fit with members that agree closely (data seed 3: pull 5.1, error ratio 0.16; see README,
    Known limits). Data seeds 1, 2, 3 measured: QCF within 1.21, 1.45, 0.52 σ; p0-p3 pulls ≤ 1.58.
    """
    ds = _closure(
        {
            "problem": {"kind": "proxy2d", "events": 100_000, "seed": 1},
            "training": {"steps": 800, "mle_reference": True, "noise_final": 0.0, "average_last": 0.5},
            "ensemble": {"members": 4, "bootstrap": True},
        },
        members=4,
    )
    # In units of a 4-member spread, deviations follow Student's t with 3 degrees of freedom: 95% within 3.18.
    assert ds.attrs["closure_max_qcf_dev_sigma"] <= 3.18
    assert float(np.abs(ds["pull"].sel(param=["p0", "p1", "p2", "p3"])).max()) <= 3.18
    assert float(ds["chi2_ndf"].max()) <= 1.5
    ratio = ds["error_ratio"].sel(param=["p0", "p1", "p2", "p3"]).values
    assert np.all((ratio > 0.3) & (ratio < 2.5)), ratio  # 4 members: the spread itself is uncertain by ~40%
    # the likelihood reference closes on the same data
    mle_pull = (ds["params_mle"] - ds["params_true"]) / ds["params_mle_err"]
    assert float(np.abs(mle_pull).max()) <= 3.0
