"""Bootstrap ensembles: replicas of the data, point-estimate members and errors from their spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import t as student_t

from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.gan.models import Discriminator
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results import ensemble_estimate
from qcf_studio.engine.run.runner import make_trainer, measured_data, member_data
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import SpecError, parse_spec


def _gauss6_data(events: int = 2000):
    problem = get_problem("gauss6")
    return make_pseudo_data(problem, np.asarray(problem.truth), events, seed=3)


def test_a_bootstrap_replica_reweights_the_same_events_reproducibly():
    data = _gauss6_data()
    a, b, other = data.bootstrap_replica(7), data.bootstrap_replica(7), data.bootstrap_replica(8)
    assert a.events is data.events  # shared, not copied
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.xsec, b.xsec)
    assert not np.array_equal(a.weights, other.weights)
    w = a.weights
    assert np.all(w == np.round(w)) and w.min() == 0  # Poisson counts: some events drop out
    assert abs(w.mean() - 1.0) < 0.05 and abs(w.var() - 1.0) < 0.1
    pulls = (np.stack([data.bootstrap_replica(s).xsec for s in range(200)]) - data.xsec) / data.xsec_err
    assert abs(pulls.mean()) < 0.3 and 0.8 < pulls.std() < 1.2


def test_a_replica_of_weighted_data_multiplies_the_weights():
    data = _gauss6_data()
    data.weights = np.full(data.events.shape[:2], 0.5)
    replica = data.bootstrap_replica(1)
    plain = _gauss6_data().bootstrap_replica(1)
    np.testing.assert_allclose(replica.weights, 0.5 * plain.weights)


def _spec(**ensemble):
    return parse_spec(
        {
            "problem": {"kind": "gauss6", "events": 2000},
            "training": {"steps": 60, "noise_final": 0.0, "average_last": 0.25},
            "ensemble": {"members": 4, "bootstrap": True, **ensemble},
        }
    )


def test_members_get_distinct_replicas_and_the_same_one_again():
    spec = _spec()
    data = measured_data(spec)
    w = [member_data(spec, data, m).weights for m in (0, 1, 0)]
    assert not np.array_equal(w[0], w[1])
    np.testing.assert_array_equal(w[0], w[2])
    spec.ensemble.bootstrap = False
    assert member_data(spec, data, 0) is data


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"ensemble": {"members": 2, "bootstrap": True}}, "ensemble.members"),
        ({"training": {"method": "mle"}, "ensemble": {"members": 1, "bootstrap": True}}, "ensemble.bootstrap"),
        ({"training": {"noise_final": 1.5}}, "training.noise_final"),
        ({"training": {"average_last": -0.1}}, "training.average_last"),
    ],
)
def test_bootstrap_settings_are_validated(raw, field):
    with pytest.raises(SpecError) as err:
        parse_spec({"problem": {"kind": "gauss6"}, **raw})
    assert err.value.field == field


def test_a_collapsed_generator_ends_as_its_averaged_point_estimate():
    spec = _spec()
    trainer = make_trainer(spec, measured_data(spec), 0, "gan")
    assert trainer.noise_scale() == 1.0
    result = trainer.fit(0, HistorySink())
    assert trainer.noise_scale() == 0.0
    assert trainer.param_count == 15  # the last 25% of 60 steps
    estimate = trainer.point_estimate()
    np.testing.assert_allclose(result.params_pred, estimate.numpy())
    np.testing.assert_array_equal(result.params_pred_std, 0.0)
    theta = torch.as_tensor(result.params_pred)[None]
    expected = trainer.problem.qcfs(theta, *trainer.qcf_grids)[0].numpy()
    np.testing.assert_allclose(result.qcf_pred, expected, rtol=1e-5, atol=1e-7)
    # a sampled generator would not have given zero spread
    assert float(trainer.generator.sample(100, scale=1.0).detach().std(0).max()) > 0


def test_bootstrap_errors_are_the_spread_between_members_widened_for_their_mean():
    pred = xr.DataArray([[1.0, 2.0], [1.2, 2.6], [0.8, 2.3]], dims=("member", "param"))
    std = xr.full_like(pred, 5.0)
    mean, err = ensemble_estimate(pred, std, bootstrap=True)
    np.testing.assert_allclose(mean, [1.0, 2.3])
    np.testing.assert_allclose(err, pred.std("member", ddof=1) * np.sqrt(1 + 1 / 3))
    _, err_gen = ensemble_estimate(pred, std)
    np.testing.assert_allclose(err_gen, np.sqrt(25.0 + pred.var("member", ddof=1)))
    _, err_one = ensemble_estimate(pred.isel(member=[0]), std.isel(member=[0]), bootstrap=True)
    assert bool(err_one.isnull().all())


@pytest.mark.parametrize("members", [4, 8])
def test_bootstrap_errors_of_the_members_mean_cover_the_truth_of_a_gaussian_mean(members):
    """A known answer: the estimator is the mean of 400 N(μ, 1) events (error 0.05), each member the mean of a
    bootstrap replica. Over 4 000 data sets the members' mean scatters by sqrt(1 + 1/n) × 0.05 and the error of
    ensemble_estimate follows it (R_bv 1); the members' spread alone is too small by that factor."""
    rng = np.random.default_rng(7)
    sets, events, mu = 4000, 400, 0.3
    data = rng.normal(mu, 1.0, size=(sets, events))
    picks = rng.integers(0, events, size=(sets, members, events))
    pred = np.take_along_axis(data[:, None, :], picks, axis=2).mean(2)  # (set, member)
    arr = xr.DataArray(pred[..., None], dims=("set", "member", "param"))
    mean, err = ensemble_estimate(arr, xr.zeros_like(arr), bootstrap=True)
    dev = (mean - mu).values[:, 0]
    e = err.values[:, 0]
    r_bv = np.sqrt(np.mean(dev**2) / np.mean(e**2))
    assert r_bv == pytest.approx(1.0, abs=0.04)
    # the error is itself estimated from n members, so the pull follows Student's t with n − 1 degrees of freedom:
    # 1σ coverage 0.61 for 4 members, 0.65 for 8 (binomial sd of 4 000 sets: 0.008)
    assert np.mean(np.abs(dev) < e) == pytest.approx(2 * student_t.cdf(1.0, members - 1) - 1, abs=0.025)
    spread_only = np.sqrt(np.mean(dev**2) / np.mean(pred.var(1, ddof=1)))
    assert spread_only == pytest.approx(np.sqrt(1 + 1 / members), abs=0.04)


def test_discriminator_features_are_standardised_per_observable():
    problem = get_problem("gauss6")
    data = _gauss6_data()
    d = Discriminator(len(problem.observable_names), problem.domain, edge_features=False)
    events = torch.as_tensor(data.events, dtype=torch.float32)
    d.standardise_to(events)
    o, n, _ = events.shape
    labels = torch.arange(o).repeat_interleave(n)
    f = d.features(events.reshape(o * n, -1), labels).reshape(o, n, -1)
    np.testing.assert_allclose(f[..., 0].mean(1), 0.0, atol=1e-4)
    np.testing.assert_allclose(f[..., 0].std(1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(f[..., 1:].sum(-1), 1.0)  # the one-hot label is left alone


def test_a_campaign_judges_a_bootstrap_fit_by_its_members_not_by_the_error_its_file_stored():
    """Fits written before the error of a members' mean was widened keep their old params_ensemble_err; a campaign
    that goes on with them (a rerun after an update) must judge all its fits alike."""
    from qcf_studio.engine.campaign.plan import FitKey
    from qcf_studio.engine.campaign.summary import fit_record

    pred = np.array([[1.0, 2.0], [1.2, 2.6], [0.8, 2.3], [1.1, 2.1]])
    ds = xr.Dataset(
        {
            "params_pred": (("member", "param"), pred),
            "params_pred_std": (("member", "param"), np.zeros_like(pred)),
            "params_true": (("param",), [1.0, 2.2]),
            "params_ensemble": (("param",), pred.mean(0)),
            "params_ensemble_err": (("param",), pred.std(0, ddof=1)),  # as an earlier version stored it
            "qcf_pred": (("member", "qcf", "x"), np.ones((4, 1, 3))),
            "qcf_pred_std": (("member", "qcf", "x"), np.zeros((4, 1, 3))),
            "qcf_true": (("qcf", "x"), np.ones((1, 3))),
        },
        attrs={"status": "completed", "uncertainty": "bootstrap"},
    )
    record = fit_record(ds, FitKey(0, "gan"))
    np.testing.assert_allclose(record.estimate, pred.mean(0))
    np.testing.assert_allclose(record.error, pred.std(0, ddof=1) * np.sqrt(1 + 1 / 4))
    assert record.draws is not None and record.draws.shape == (4, 2)
