"""Measured data from uploaded files (NetCDF-4 and CSV, optional weights) and weighted fits."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from qcf_studio.app.cli.commands import main as cli_main
from qcf_studio.app.dashboard.upload import UploadError, read_measured_upload, save_upload, upload_summary
from qcf_studio.engine.accel.handpass import adversarial_pass
from qcf_studio.engine.data.histograms import data_counts, density_histograms, histogram_edges
from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.gan.models import mlp
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.mle import MLEFit
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.run.runner import make_trainer, measured_data
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import parse_spec


def _spec(kind: str = "proxy1d", events: int = 1000, data: str | None = None, **training):
    t = {
        "method": "gan",
        "steps": 4,
        "metrics_every": 2,
        "snapshot_every": 4,
        "batch_params": 8,
        "events_per_param": 8,
        **training,
    }
    return parse_spec(
        {
            "name": "upload",
            "problem": {"kind": kind, "events": events, "seed": 4, "data": data},
            "training": t,
            "ensemble": {"members": 1},
        }
    )


def _csv(data: MeasuredData, weights: bool = True, xsec: bool = True) -> bytes:
    """CSV text of ``data`` as a user would write it (repr keeps every float exact)."""
    names = get_problem(data.kind).observable_names
    coords = ["x"] if data.events.shape[-1] == 1 else ["x", "y"]
    lines = ["# measured events, one per line"]
    if xsec:
        pairs = zip(names, data.xsec, data.xsec_err)
        lines.append("# xsec: " + ", ".join(f"{n}={float(v)!r}±{float(e)!r}" for n, v, e in pairs))
    lines.append(",".join(["observable", *coords] + (["weight"] if weights else [])))
    for o, n in enumerate(names):
        for i, ev in enumerate(data.events[o]):
            w = [repr(float(data.weights[o, i]))] if weights else []
            lines.append(",".join([n, *(repr(float(v)) for v in ev), *w]))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def weighted() -> MeasuredData:
    p = get_problem("proxy1d")
    data = make_pseudo_data(p, np.asarray(p.truth), 1000, seed=6)
    w = np.random.default_rng(0).uniform(0.5, 1.5, data.events.shape[:2])
    return dataclasses.replace(data, truth=None, weights=w)


@pytest.fixture(scope="module")
def cli_netcdf(tmp_path_factory) -> tuple[Path, bytes]:
    """A NetCDF file written by `qcf-studio data` (proxy1d, 1000 events per observable)."""
    d = tmp_path_factory.mktemp("cli")
    (d / "spec.yaml").write_text(_spec().to_yaml())
    assert cli_main(["data", str(d / "spec.yaml"), "--out", str(d / "data.nc")]) == 0
    return d / "spec.yaml", (d / "data.nc").read_bytes()


def test_csv_round_trips_through_save_upload_into_a_spec(weighted, tmp_path):
    data = read_measured_upload("my events.csv", _csv(weighted), "proxy1d")
    np.testing.assert_array_equal(data.events, weighted.events)
    np.testing.assert_array_equal(data.weights, weighted.weights)
    np.testing.assert_array_equal(data.xsec, weighted.xsec)
    path = save_upload(data, tmp_path / "uploads", "../my events.csv")
    assert path == tmp_path / "uploads" / "my_events.nc" and os.listdir(tmp_path / "uploads") == ["my_events.nc"]
    assert save_upload(data, tmp_path / "uploads", "my events.csv").name == "my_events-2.nc"  # never overwrites
    back = measured_data(_spec(data=str(path)))
    np.testing.assert_array_equal(back.events, weighted.events)
    np.testing.assert_array_equal(back.weights, weighted.weights)
    np.testing.assert_array_equal(back.xsec_err, weighted.xsec_err)
    assert "weighted events" in upload_summary(back)


def test_csv_columns_may_come_in_any_order_with_spaces_and_comments_between_events(weighted):
    lines = _csv(weighted).decode().splitlines()
    body = [", ".join([f[2], f[0], f[1]]) for f in (line.split(",") for line in lines[3:])]
    text = "\n".join([lines[1], "weight, observable, x", body[0], "# a comment", "", *body[1:]])
    data = read_measured_upload("swapped.csv", text.encode(), "proxy1d")
    np.testing.assert_array_equal(data.events, weighted.events)
    np.testing.assert_array_equal(data.weights, weighted.weights)


def test_netcdf_written_by_qcf_studio_data_is_read_with_its_truth(cli_netcdf):
    spec_path, content = cli_netcdf
    data = read_measured_upload("data.nc", content, "proxy1d")
    expected = measured_data(_spec())
    np.testing.assert_array_equal(data.events, expected.events)
    np.testing.assert_array_equal(data.truth, expected.truth)
    assert data.weights is None


def test_shape_only_problems_need_no_cross_sections_in_a_csv():
    p = get_problem("gauss6")
    data = make_pseudo_data(p, np.asarray(p.truth), 200, seed=1)
    back = read_measured_upload("g.csv", _csv(data, weights=False, xsec=False), "gauss6")
    np.testing.assert_array_equal(back.events, data.events)
    np.testing.assert_allclose(back.xsec, 200.0)  # the event count stands in (unused by gauss6's fits)


def _netcdf_bytes(ds: xr.Dataset, tmp_path: Path) -> bytes:
    ds.to_netcdf(tmp_path / "x.nc", engine="h5netcdf")
    return (tmp_path / "x.nc").read_bytes()


def _error_cases(weighted: MeasuredData, tmp_path: Path) -> list[tuple[str, bytes, str, list[str]]]:
    good = _csv(weighted).decode()
    head, *rows = good.splitlines()[2:]  # header and event lines (after the two comment lines): rows[i] is line i + 4
    xs = good.splitlines()[1]

    def edit(i: int, column: int, value: str) -> bytes:
        fields = rows[i].split(",")
        fields[column] = value
        return "\n".join([good.splitlines()[0], xs, head, *rows[:i], ",".join(fields), *rows[i + 1 :]]).encode()

    few = "\n".join([xs, head, *rows[:50], *rows[1000:1050]])
    nan_w = weighted.to_xarray().copy(deep=True)
    nan_w["weights"][1, 7] = np.nan
    run_like = xr.Dataset({"params_pred": (("member", "param"), np.zeros((1, 6)))})
    return [
        ("big.csv", good.encode(), "proxy1d", ["big.csv", "upload limit"]),
        ("latin.csv", (good[:300] + "é").encode("latin-1"), "proxy1d", ["latin.csv", "not UTF-8", "line"]),
        (
            "cols.csv",
            "\n".join([xs, "observable,weight", "sigma1,1"]).encode(),
            "proxy1d",
            ["cols.csv", "line 2", "lacks column", "x"],
        ),
        (
            "obs.csv",
            edit(1000, 0, "sigma3"),
            "proxy1d",
            ["obs.csv", "line 1004", "unknown observable 'sigma3'", "proxy1d has sigma1, sigma2"],
        ),
        ("num.csv", edit(4, 1, "abc"), "proxy1d", ["num.csv", "line 8", "column 'x'", "'abc' is not a number"]),
        ("dom.csv", edit(9, 1, "1.5"), "proxy1d", ["dom.csv", "outside the proxy1d domain x ∈ [0.1, 1]", "line 13"]),
        ("few.csv", few.encode(), "proxy1d", ["few.csv", "'sigma1' has 50 events", "at least 100"]),
        ("empty.csv", b"", "proxy1d", ["empty.csv", "empty"]),
        (
            "neg.csv",
            "\n".join([xs, head, *(",".join([*r.split(",")[:2], "-1.0"]) for r in rows)]).encode(),
            "proxy1d",
            ["neg.csv", "column 'weight'", "'sigma1'", "sum to -1000, not above 0"],
        ),
        ("noxs.csv", "\n".join([head, *rows]).encode(), "proxy1d", ["noxs.csv", "no cross sections", "Nu, Nd"]),
        ("run.nc", _netcdf_bytes(run_like, tmp_path), "proxy1d", ["run.nc", "run result", "no variable 'events'"]),
        (
            "nanw.nc",
            _netcdf_bytes(nan_w, tmp_path),
            "proxy1d",
            ["nanw.nc", "variable 'weights'", "'sigma2'", "non-finite"],
        ),
        (
            "other.nc",
            _netcdf_bytes(weighted.to_xarray(), tmp_path),
            "proxy2d",
            ["other.nc", "'proxy1d', not 'proxy2d'"],
        ),
        ("fake.nc", b"not a netcdf file", "proxy1d", ["fake.nc", "not a NetCDF-4 file"]),
    ]


def test_malformed_uploads_are_rejected_naming_the_file_and_the_problem(weighted, tmp_path):
    for name, content, kind, expected in _error_cases(weighted, tmp_path):
        with pytest.raises(UploadError) as err:
            read_measured_upload(name, content, kind, max_bytes=1000 if name == "big.csv" else 50 * 2**20)
        for text in expected:
            assert text in str(err.value), (name, str(err.value))


def test_non_finite_weights_or_a_negative_sum_are_rejected_in_measured_data(weighted):
    ds = weighted.to_xarray().copy(deep=True)  # to_xarray shares the arrays
    ds["weights"][0, 3] = -2.0  # one negative weight (an sWeight) is data; a negative sum is not
    assert MeasuredData.from_xarray(ds, source="runs/w.nc").negative_weights
    ds["weights"][0] = -1.0
    with pytest.raises(ValueError, match=r"runs/w\.nc: variable 'weights' of observable 'sigma1': the weights sum to"):
        MeasuredData.from_xarray(ds, source="runs/w.nc")
    with pytest.raises(ValueError, match="variable 'weights'.*non-finite"):
        dataclasses.replace(weighted, weights=np.full(weighted.events.shape[:2], np.inf))


def test_weights_of_one_give_exactly_the_unweighted_results(proxy1d_data):
    ones = dataclasses.replace(proxy1d_data, weights=np.ones(proxy1d_data.events.shape[:2]))
    config = TrainingConfig(steps=3, batch_params=8, events_per_param=8)
    runs = []
    for data in (proxy1d_data, ones):
        tr = GANTrainer(get_problem("proxy1d"), data, config, seed=3)
        runs.append(([tr.train_step() for _ in range(3)], tr.predict(n_params=50, events_per_param=10)))
    assert runs[0][0] == runs[1][0]
    for key in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][key], runs[1][1][key])
    # The weighted path of the discriminator pass itself: real weights of exactly 1 change no bit.
    torch.manual_seed(0)
    net, x = mlp(3, 16, 2, 1), torch.randn(300, 3)
    a = adversarial_pass(net, x, 100)
    grads = [p.grad.clone() for p in net.parameters()]
    b = adversarial_pass(net, x, 100, real_weights=torch.ones(100))
    assert torch.equal(a.loss_d, b.loss_d) and torch.equal(a.grad_inputs, b.grad_inputs)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, net.parameters()))


def test_duplicated_events_and_weight_two_give_the_same_histograms(weighted):
    twice = dataclasses.replace(weighted, weights=None, events=np.concatenate([weighted.events] * 2, axis=1))
    two = dataclasses.replace(weighted, weights=np.full(weighted.events.shape[:2], 2.0))
    edges = histogram_edges(weighted.events)
    dens = density_histograms(two.events, edges, two.weights)
    np.testing.assert_allclose(density_histograms(twice.events, edges), dens, rtol=1e-12)
    np.testing.assert_array_equal(data_counts(twice, edges)[0], data_counts(two, edges)[0])
    assert data_counts(two, edges)[1] is not None  # sum of w² variances: 4 per event


def test_a_weighted_upload_trains_gan_steps_and_fits_by_maximum_likelihood(weighted, tmp_path):
    path = save_upload(read_measured_upload("w.csv", _csv(weighted), "proxy1d"), tmp_path, "w.csv")
    spec = _spec(data=str(path))
    data = measured_data(spec)
    gan = make_trainer(spec, data, 0, "gan")
    result = gan.fit(0, HistorySink())
    assert result.steps_done == 4 and np.isfinite(result.chi2_ndf).all()
    assert gan.real_weights is not None and abs(float(gan.real_weights.mean()) - 1.0) < 1e-6
    rank = make_trainer(spec, data, 0, "gan", shard=(1, 2))  # data-parallel ranks see their share of the weights
    assert isinstance(rank, GANTrainer) and rank.real_weights is not None and rank.real_weights.shape == (2, 500)
    mle = make_trainer(_spec(data=str(path), method="mle", steps=15), data, 0, "mle")
    assert isinstance(mle, MLEFit)
    fit = mle.fit(0, HistorySink())
    assert np.isfinite(fit.params_pred).all() and np.all(fit.params_pred_std > 0)
    # The sandwich H⁻¹ V H⁻¹ with these mild weights is close to, not equal to, the Hessian errors.
    theta_hat = torch.as_tensor(fit.params_pred, dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(mle.nll, theta_hat)  # the NLL's, at MINUIT's minimum
    hessian_err = torch.sqrt(torch.diagonal(torch.linalg.inv(hessian))).numpy()
    ratio = fit.params_pred_std / hessian_err
    assert np.all((ratio > 0.7) & (ratio < 1.5)) and not np.allclose(ratio, 1.0)
