"""Theory, pseudo-data, detector, training step and results of the engine (no Dask)."""

import numpy as np
import torch
import xarray as xr

from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.detector import ResolutionSmearing
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.problems import get_problem, problem_kinds
from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.files import write_netcdf_atomic
from qcf_studio.engine.run.runner import train_member
from tests.conftest import small_spec


class _Null:
    def log_metrics(self, *a):
        pass

    def log_snapshot(self, *a):
        pass


def test_proxy1d_observables_are_the_stated_combinations(proxy1d):
    x = torch.linspace(0.1, 1.0, 11)
    theta = proxy1d.truth_tensor()[None]
    q = proxy1d.qcfs(theta, x)[0]
    u_expected = 2.1875 * x**-0.5 * (1 - x) ** 3
    torch.testing.assert_close(q[0], u_expected)
    s = proxy1d.observables(theta, x)[0]
    torch.testing.assert_close(s[0], 4 * q[0] + q[1])
    torch.testing.assert_close(s[1], 4 * q[1] + q[0])
    assert "proxy1d" in problem_kinds()


def test_pseudo_data_are_seeded_and_carry_cross_sections(proxy1d):
    a = make_pseudo_data(proxy1d, np.asarray(proxy1d.truth), 3000, seed=9)
    b = make_pseudo_data(proxy1d, np.asarray(proxy1d.truth), 3000, seed=9)
    c = make_pseudo_data(proxy1d, np.asarray(proxy1d.truth), 3000, seed=10)
    assert np.array_equal(a.events, b.events) and not np.array_equal(a.events, c.events)
    assert a.events.shape == (2, 3000, 1) and a.events.min() >= 0.1 and a.events.max() <= 1.0
    # integrated cross sections agree with the exact integral within their (1/sqrt(N)) errors
    x = torch.linspace(0.1, 1.0, 100_001, dtype=torch.float64)
    exact = torch.trapezoid(proxy1d.observables(proxy1d.truth_tensor(torch.float64)[None], x)[0], x).numpy()
    assert np.all(np.abs(a.xsec - exact) < 5 * a.xsec_err)
    back = MeasuredData.from_xarray(a.to_xarray())
    assert np.array_equal(back.events, a.events)


def test_smearing_is_identity_at_zero_and_has_the_stated_width():
    x = torch.full((200_000,), 0.5)
    assert torch.equal(ResolutionSmearing(0.0)(x), x)
    y = ResolutionSmearing(0.1)(x, generator=torch.Generator().manual_seed(0))
    assert abs(float((1 - y / x).std()) - 0.1) < 0.002


def test_training_step_moves_every_generator_weight(proxy1d, proxy1d_data):
    tr = GANTrainer(proxy1d, proxy1d_data, TrainingConfig(steps=100, batch_params=16, events_per_param=16), seed=0)
    before = [p.detach().clone() for p in tr.generator.parameters()]
    tr.xsec_weight = lambda: 1.0  # both loss terms active from the first step
    m = tr.train_step()
    assert {"loss_g", "loss_d", "d_acc_real", "d_acc_fake"} <= set(m)
    assert all(np.isfinite(list(m.values())))
    assert all(not torch.equal(a, b) for a, b in zip(before, tr.generator.parameters()))
    theta = tr.generator.sample(500)
    lo, hi = proxy1d.bounds()
    assert (theta >= lo).all() and (theta <= hi).all()


def test_member_stops_when_asked_and_keeps_what_it_made(proxy1d_data):
    spec = small_spec(steps=500)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2  # stop at the third check (step 40)

    r = train_member(spec, 0, proxy1d_data, _Null(), stop)
    assert r.status == "stopped" and r.steps_done == 40
    assert r.metrics["step"] == [10, 20, 30, 40]
    assert np.isfinite(r.params_pred).all()


def test_results_follow_the_contract_and_are_written_atomically(tmp_path, proxy1d_data):
    spec = small_spec(steps=20)
    members = [train_member(spec, m, proxy1d_data, _Null()) for m in range(2)]
    ds = build_results(spec, proxy1d_data, members, 1.5)
    for var, dims in {
        "loss_g": ("member", "step"),
        "loss_d": ("member", "step"),
        "d_acc_real": ("member", "step"),
        "d_acc_fake": ("member", "step"),
        "params_pred": ("member", "param"),
        "params_pred_std": ("member", "param"),
        "params_true": ("param",),
        "qcf_pred": ("member", "qcf", "x"),
        "qcf_true": ("qcf", "x"),
        "hist_data": ("observable", "bin"),
        "hist_gen": ("member", "observable", "bin"),
    }.items():
        assert ds[var].dims == dims, var
    assert ds.attrs["status"] == "completed"
    assert {"spec", "wall_seconds", "events_per_second", "versions"} <= set(ds.attrs)
    # the parameter means as training went, as streamed (the live view's parameter panel)
    assert ds["params_history"].dims == ("member", "step", "param")
    np.testing.assert_array_equal(ds["params_history"].sel(member=1, param="bu"), members[1].metrics["param_bu"])
    path = write_netcdf_atomic(ds, tmp_path / "r.nc")
    assert [p.name for p in tmp_path.iterdir()] == ["r.nc"]
    with xr.open_dataset(path, engine="h5netcdf") as back:
        assert "proxy1d" in back.attrs["spec"]
        np.testing.assert_allclose(back["params_pred"].values, ds["params_pred"].values)


def test_pseudo_data_are_smeared_by_the_spec_resolution(proxy1d):
    truth = np.asarray(proxy1d.truth)
    sharp = make_pseudo_data(proxy1d, truth, 50_000, seed=3, resolution=0.0)
    smeared = make_pseudo_data(proxy1d, truth, 50_000, seed=3, resolution=0.1)
    assert sharp.events.max() <= 1.0 < smeared.events.max()  # smearing leaks events past x = 1
    # x(1 - R): the spread of log(x) grows by about the resolution in quadrature
    grow = np.var(np.log(smeared.events), axis=1) - np.var(np.log(sharp.events), axis=1)
    assert np.all(np.abs(grow - 0.01) < 0.003)
    np.testing.assert_allclose(smeared.xsec, sharp.xsec)  # cross sections are truth-level counts


def test_training_through_a_full_detector_chain():
    # Acceptance weights, background and smearing act on generated events and on the pseudo-data alike.
    from qcf_studio.engine.run.runner import measured_data
    from qcf_studio.engine.run.sinks import HistorySink
    from qcf_studio.engine.spec import parse_spec

    spec = parse_spec(
        {
            "problem": {"kind": "proxy1d", "events": 5000, "seed": 3},
            "detector": {
                "resolution": 0.02,
                "acceptance": {"turn_on": 0.2, "width": 0.03, "max": 0.9},
                "background": {"fraction": 0.05},
            },
            "training": {"steps": 40, "metrics_every": 10, "snapshot_every": 20},
            "ensemble": {"members": 1},
        }
    )
    data = measured_data(spec)
    assert data.events.shape[1] < 5000  # accept-reject thinned the pseudo-data
    assert np.all(data.xsec < make_pseudo_data(get_problem("proxy1d"), np.asarray(spec.truth_values()), 5000, 3).xsec)
    result = train_member(spec, 0, data, HistorySink())
    assert result.status == "completed" and result.steps_done == 40
    assert np.all(np.isfinite(result.params_pred)) and np.all(np.isfinite(result.chi2_ndf))


def test_retained_freed_memory_stops_large_temporaries_from_page_faulting():
    """After ``retain_freed_memory`` a repeated computation with 40 MB temporaries reuses the heap: (almost)
    no new page faults per call. By default glibc maps blocks above 32 MB afresh for every allocation. Run in
    a fresh process, whose glibc starts from its defaults."""
    import subprocess
    import sys

    code = """
import resource, torch
from qcf_studio.engine.accel.malloc import retain_freed_memory
torch.set_num_threads(1)
x = torch.rand(10_000_000)
def work():
    return ((x * 2.0 + 1.0) * (x - 0.5)).sum()
def faults(calls=10):
    for _ in range(10):  # the heap settles: it grew once more as late as the 7th call (5 of 12 runs)
        work()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        work()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
default = faults()
assert retain_freed_memory()
print(default, faults())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    default, retained = map(float, r.stdout.split())
    assert default > 10_000  # each 40 MB temporary faults in its 10 000 pages of 4 KiB
    assert retained < 100


def test_x_marginals_of_results_files_are_the_engines_and_a_failed_member_stays_blank():
    from qcf_studio.engine.data.marginals import histogram_marginal_x, marginal_x, qcf_marginal_x

    rng = np.random.default_rng(0)
    edges = np.stack([np.stack([np.linspace(0, 1, 5), np.sort(rng.uniform(0, 2, 5))]) for _ in range(2)])  # (O, 2, 5)
    hist = rng.uniform(0, 1, (3, 2, 4, 4))  # (member, observable, bin, bin_y)
    hist[2] = np.nan  # a failed member: nothing to draw, not zeros
    expected = (hist * np.diff(edges[:, 1], axis=-1)[None, :, None, :]).sum(axis=-1)
    np.testing.assert_array_equal(marginal_x(hist, edges), expected)
    stored = xr.DataArray(hist, dims=("member", "observable", "bin", "bin_y"), coords={"observable": ["s1", "s2"]})
    bin_edges = xr.DataArray(edges, dims=("observable", "coord", "bin_edge"), coords={"coord": ["x", "y"]})
    marginal = histogram_marginal_x(stored, bin_edges)
    assert marginal.dims == ("member", "observable", "bin") and list(marginal["observable"].values) == ["s1", "s2"]
    np.testing.assert_array_equal(marginal.values, expected)
    assert np.isnan(marginal.sel(member=2)).all()
    one_d = hist[:, :, :, 0]  # 1D histograms are their own x-marginals
    assert marginal_x(one_d, edges[:, :1]) is one_d
    stored_1d = xr.DataArray(one_d, dims=("member", "observable", "bin"))
    assert histogram_marginal_x(stored_1d, bin_edges.isel(coord=0)) is stored_1d

    x, y = np.linspace(0, 1, 7), np.linspace(0, 2, 9) ** 2
    q = xr.DataArray(rng.uniform(0, 1, (2, 7, 9)), dims=("qcf", "x", "y"), coords={"x": x, "y": y})
    np.testing.assert_allclose(qcf_marginal_x(q).values, np.trapezoid(q.values, y, axis=-1), rtol=1e-15)
    assert qcf_marginal_x(q.isel(y=0, drop=True)).dims == ("qcf", "x")
