"""Reduced closure tests beyond proxy1d (the full ones: sample_data/*.yaml)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.results import build_results
from engine.runner import measured_data, reference_fit, train_member
from engine.sinks import HistorySink
from engine.spec import parse_spec


def _closure(raw: dict, members: int = 2):
    spec = parse_spec(raw)
    data = measured_data(spec)
    results = [train_member(spec, m, data, HistorySink()) for m in range(members)]
    reference = reference_fit(spec, data) if spec.training.mle_reference else None
    return build_results(spec, data, results, 1.0, reference)


@pytest.mark.slow
def test_reduced_gauss6_closure_with_an_mle_reference():
    ds = _closure({"problem": {"kind": "gauss6", "events": 5000, "seed": 2},
                   "training": {"steps": 400, "events_per_param": 16, "mle_reference": True}})
    assert ds.attrs["closure_max_abs_pull"] <= 3.0
    assert ds.attrs["closure_max_qcf_dev_sigma"] <= 2.0
    # The likelihood reference closes on the same data with errors of 1/sqrt(Fisher information).
    mle_pull = (ds["params_mle"] - ds["params_true"]) / ds["params_mle_err"]
    assert float(np.abs(mle_pull).max()) <= 3.0
    c = np.array([(1, 1), (-2, 2), (-9.46, 1.67), (4.20, 0.74), (0.921, 1.98), (-1.10, 1.90)])
    np.testing.assert_allclose(ds["params_mle_err"], np.sqrt(np.diag(np.linalg.inv(5000 * c.T @ c))), rtol=1e-3)
    assert float(ds["error_ratio"].min()) > 0 and "closure_max_error_ratio" in ds.attrs


@pytest.mark.slow
def test_reduced_gauss6_bootstrap_ensemble_has_errors_near_the_statistical_limit():
    """Bootstrap members' spread estimates the statistical error; the generators' spread does not."""
    ds = _closure({"problem": {"kind": "gauss6", "events": 5000, "seed": 2},
                   "training": {"steps": 800, "events_per_param": 16, "mle_reference": True,
                                "noise_final": 0.0, "average_last": 0.5},
                   "ensemble": {"members": 4, "bootstrap": True}}, members=4)
    assert ds.attrs["uncertainty"] == "bootstrap"
    # In units of a 4-member spread, deviations follow Student's t with 3 degrees of freedom: 95% within 3.18.
    assert ds.attrs["closure_max_abs_pull"] <= 3.18
    assert ds.attrs["closure_max_qcf_dev_sigma"] <= 3.18
    ratio = ds["error_ratio"].values
    assert np.all((ratio > 0.3) & (ratio < 2.5)), ratio  # 4 members: the spread itself is uncertain by ~40%
    np.testing.assert_array_equal(ds["params_pred_std"], 0.0)  # members ended as point estimates
