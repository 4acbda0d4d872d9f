"""MINUIT as the likelihood fit's minimiser: it finds the previous L-BFGS fit's minimum and errors on every problem
(sandwich errors for weighted data included), flags a parameter at a bound in the results and the closure report,
runs MINOS on request and stops when asked; results files without its summary still open."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from mle_lbfgs import lbfgs_fit

from qcf_studio.app.export.report import LIKELIHOOD_FIT, closure_report, report_markdown
from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.gan.config import TrainingConfig
from qcf_studio.engine.mle import MLEFit
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results import ResultsContractError, build_results, check_results
from qcf_studio.engine.results.fit_quality import FIT_QUALITY_ATTRS, FIT_QUALITY_DIMS
from qcf_studio.engine.run.runner import make_trainer, measured_data
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import SpecError, parse_spec

# Events per observable (data set) and pseudo-data seed: enough events that every parameter lies several σ inside
# its bounds, where HESSE's errors and the autograd Hessian's must agree.
CROSS_CHECK = {"gauss6": (500, 1), "proxy1d": (20_000, 1), "proxy2d": (100_000, 1), "multiset2d": (30_000, 2)}


def _fit(problem, data, config=None, **kw) -> MLEFit:
    f = MLEFit(problem, data, config or TrainingConfig(), seed=1, **kw)
    f.simulated_events, f.qcf_draws = (2000, 2000), (100, 50)  # predictions are not under test here
    return f


def _compare(f: MLEFit, result) -> tuple[float, float]:
    """Max |Δθ|/σ and max |σ_MINUIT/σ_L-BFGS − 1| against the previous fit of the same NLL."""
    theta, err = lbfgs_fit(f)
    shift = np.abs(result.params_pred - theta.numpy()) / err.numpy()
    ratio = result.params_pred_std / err.numpy()
    print(f"{f.problem.kind}: max |Δ|/σ {shift.max():.4f}, error ratio {ratio.min():.4f}–{ratio.max():.4f}")
    return float(shift.max()), float(np.abs(ratio - 1).max())


@pytest.mark.parametrize("kind", list(CROSS_CHECK))
def test_minuit_finds_the_previous_fits_minimum_and_errors(kind):
    p = get_problem(kind)
    events, seed = CROSS_CHECK[kind]
    f = _fit(p, make_pseudo_data(p, np.asarray(p.truth), events, seed=seed))
    result = f.fit(0, HistorySink())
    assert result.status == "completed" and result.fit_valid and not result.error, result.error
    assert result.fit_edm < 1e-4 and result.fit_calls == f.objective.calls > 0
    assert not result.at_bound.any()
    shift, error_deviation = _compare(f, result)
    assert shift < 0.1 and error_deviation < 0.05


def test_weighted_data_keep_the_sandwich_errors():
    p = get_problem("proxy1d")
    data = make_pseudo_data(p, np.asarray(p.truth), 20_000, seed=1).bootstrap_replica(7)
    f = _fit(p, data)
    assert f.event_w is not None
    result = f.fit(0, HistorySink())
    assert result.fit_valid
    shift, error_deviation = _compare(f, result)
    assert shift < 0.1 and error_deviation < 0.05
    # The sandwich differs from HESSE's H⁻¹ alone (Poisson weights: V ≈ 2 H on the event part).
    assert np.all(result.params_pred_std > 1.2 * np.sqrt(np.diag(f.cov.numpy())) / np.sqrt(2))


def _bound_spec(method: str = "mle", **training) -> dict:
    """gauss6 with p0's range ending at 1.99, below the truth (2.0) that made the data by 2σ."""
    problem = {"kind": "gauss6", "events": 500, "seed": 1, "truth": {"p0": 1.99, "p1": 1.0}}
    problem["bounds"] = {"p0": [1.5, 1.99], "p1": [0.0, 3.0]}
    return {
        "name": "at-bound",
        "problem": problem,
        "training": {"method": method, **training},
        "ensemble": {"members": 1},
    }


@pytest.fixture(scope="module")
def at_bound_run():
    """The fit pushes p0 against 1.99."""
    spec = parse_spec(_bound_spec())
    data = measured_data(parse_spec({"name": "data", "problem": {"kind": "gauss6", "events": 500, "seed": 1}}))
    result = make_trainer(spec, data, 0, "mle").fit(0, HistorySink())
    return spec, data, result


def test_a_parameter_against_its_bound_is_flagged_with_its_minos_interval(at_bound_run):
    _, _, result = at_bound_run
    assert list(result.at_bound) == [True, False]
    assert result.params_pred[0] == pytest.approx(1.99, abs=1e-3)
    lower, upper = result.minos_errors[0]
    assert lower < 0 and upper == pytest.approx(0.0, abs=1e-3)  # MINOS ran for p0 (near its bound) only
    assert np.all(np.isnan(result.minos_errors[1]))
    assert "parameters at a bound (p0)" in result.error


def test_a_parameter_at_its_bound_takes_its_minos_error_and_the_others_hesse_with_it_held():
    """At a limit HESSE quotes a vanishing error (here 6e-7 for p0) or loses every error to a forced positive
    definite matrix (multiset2d's C_p4); the fit holds p0 there instead, as MINUIT's users do."""
    spec = parse_spec(_bound_spec())
    data = measured_data(parse_spec({"name": "data", "problem": {"kind": "gauss6", "events": 500, "seed": 1}}))
    f = make_trainer(spec, data, 0, "mle")
    result = f.fit(0, HistorySink())
    assert result.fit_valid and list(result.at_bound) == [True, False]
    lower, _ = result.minos_errors[0]
    assert result.params_pred_std[0] == pytest.approx(-lower, rel=1e-9) and -lower > 1e-4
    # p1's error given p0 held: 1 / sqrt(∂²NLL/∂p1²) (errordef 0.5: the covariance is the NLL's inverse Hessian).
    hessian = torch.autograd.functional.hessian(f.nll, f.theta_hat.clone())
    assert result.params_pred_std[1] == pytest.approx(float(hessian[1, 1]) ** -0.5, rel=0.02)
    assert float(f.cov[0, 1]) == 0.0 and "errors of p0 from MINOS" in result.error
    # The QCF band is drawn from that covariance: finite everywhere.
    assert np.isfinite(result.qcf_pred_std).all()


def test_a_weighted_fit_scales_a_held_parameters_minos_error_by_the_sandwich():
    """A bootstrap replica's Poisson(1) weights have E[w²] = 2: the sandwich widens the weighted likelihood's errors
    by about √2, for the parameter held at its limit (its MINOS error) as for the others (HESSE's)."""
    spec = parse_spec(_bound_spec())
    data = measured_data(parse_spec({"name": "data", "problem": {"kind": "gauss6", "events": 500, "seed": 1}}))
    f = make_trainer(spec, data.bootstrap_replica(7), 0, "mle")
    result = f.fit(0, HistorySink())
    assert f.event_w is not None and list(result.at_bound) == [True, False]
    held = result.params_pred_std[0] / -result.minos_errors[0][0]
    hessian = torch.autograd.functional.hessian(f.nll, f.theta_hat.clone())
    free = result.params_pred_std[1] * float(hessian[1, 1]) ** 0.5  # p1's error given p0 held, against H's
    print(f"sandwich / weighted likelihood: held p0 {held:.3f}, p1 {free:.3f}")
    assert held == pytest.approx(np.sqrt(2), rel=0.15) and free == pytest.approx(np.sqrt(2), rel=0.15), (held, free)
    assert "errors of p0 from MINOS scaled by the sandwich" in result.error


def test_the_bound_is_in_the_results_file_and_the_report_says_so(at_bound_run, tmp_path):
    spec, data, result = at_bound_run
    build_results(spec, data, [result], 1.0).to_netcdf(tmp_path / "run.nc", engine="h5netcdf")
    with xr.open_dataset(tmp_path / "run.nc", engine="h5netcdf") as f:
        ds = f.load()
    check_results(ds, "run.nc")
    assert ds["params_at_bound"].values.tolist() == [[1, 0]] and int(ds["fit_valid"][0]) == 1
    assert np.isfinite(float(ds["params_minos_lower"][0, 0])) and np.isnan(float(ds["params_minos_lower"][0, 1]))
    (c,) = [c for c in closure_report(ds) if c.name == LIKELIHOOD_FIT]
    assert c.passed is False and not c.decisive
    assert "converged to a valid minimum" in c.text and "at a bound of their range: p0, MINOS" in c.text
    assert "at a bound" in report_markdown(ds)
    # An invalid fit is said in words too.
    ds["fit_valid"][:] = 0
    (c,) = [c for c in closure_report(ds) if c.name == LIKELIHOOD_FIT]
    assert "is NOT VALID" in c.text


def test_a_gan_runs_likelihood_reference_at_a_bound_is_flagged(at_bound_run):
    _, data, result = at_bound_run
    gan_spec = parse_spec(_bound_spec("gan", mle_reference=True))
    member = dataclasses.replace(result, fit_valid=None, fit_edm=None, fit_calls=None, at_bound=None, minos_errors=None)
    ds = build_results(gan_spec, data, [member], 1.0, reference=result)
    check_results(ds, "gan")
    assert "fit_valid" not in ds and ds.attrs["mle_valid"] == 1 and ds.attrs["mle_calls"] == result.fit_calls
    assert ds["params_mle_at_bound"].values.tolist() == [1, 0]
    (c,) = [c for c in closure_report(ds) if c.name == LIKELIHOOD_FIT]
    assert c.text.startswith("The likelihood reference fit") and "p0" in c.text


def test_results_without_minuits_summary_still_open_and_a_wrong_one_is_refused(at_bound_run):
    spec, data, result = at_bound_run
    ds = build_results(spec, data, [result], 1.0)
    old = ds.drop_vars([v for v in FIT_QUALITY_DIMS if v in ds])
    for key in FIT_QUALITY_ATTRS:
        old.attrs.pop(key, None)
    check_results(old, "old.nc")
    assert LIKELIHOOD_FIT not in [c.name for c in closure_report(old)]
    with pytest.raises(ResultsContractError, match="fit_valid"):
        check_results(ds.assign(fit_valid=(("param",), np.ones(2))), "bad.nc")


def test_minos_runs_for_every_parameter_on_request():
    spec = parse_spec(
        {
            "name": "minos",
            "problem": {"kind": "gauss6", "events": 500, "seed": 2},
            "training": {"method": "mle", "minos": True},
            "ensemble": {"members": 1},
        }
    )
    result = make_trainer(spec, measured_data(spec), 0, "mle").fit(0, HistorySink())
    assert spec.training.config().minos and result.fit_valid and not result.at_bound.any()
    # A Gaussian likelihood: MINOS's interval is HESSE's error on both sides.
    np.testing.assert_allclose(-result.minos_errors[:, 0], result.params_pred_std, rtol=1e-2)
    np.testing.assert_allclose(result.minos_errors[:, 1], result.params_pred_std, rtol=1e-2)
    with pytest.raises(SpecError, match="training.minos"):
        parse_spec({"name": "x", "problem": {"kind": "gauss6"}, "training": {"minos": "yes"}})


def test_a_stop_request_ends_migrad_and_keeps_the_best_point():
    p = get_problem("proxy1d")
    f = _fit(p, make_pseudo_data(p, np.asarray(p.truth), 2000, seed=3))
    checks = []

    def stop() -> bool:
        checks.append(1)
        return len(checks) > 2

    result = f.fit(0, HistorySink(), stop_requested=stop, stop_check_every=20)
    assert result.status == "stopped" and 0 < result.steps_done <= 40 and not result.fit_valid
    assert np.all(np.isfinite(result.params_pred)) and np.all(np.isnan(result.params_pred_std))
