"""Runs browser, replay of finished runs, heat maps: on small result files written in-process (tests/run_files.py;
the comparison of runs: tests/test_compare.py)."""

from __future__ import annotations

import os
from pathlib import Path

import holoviews as hv
import numpy as np
import pytest
import xarray as xr
from bokeh.model import Model as BokehModel

import qcf_studio.app.catalog as catalog
from qcf_studio.app.catalog import NotARunError, list_runs, load_run
from tests.run_files import T0, copy_to, open_results

hv.extension("bokeh", logo=False)

# --- catalogue ------------------------------------------------------------------------------------------------


def test_catalog_lists_cli_runs_newest_first_with_status_method_duration_and_verdict(runs, tmp_path):
    for key in ("gan", "mle"):
        copy_to(runs[key], tmp_path / runs[key].name)

    def passed_dp(ds):  # a passed verdict and a data-parallel spec, as the attributes say
        ds.attrs.update(closure_passed=1, spec=ds.attrs["spec"].replace("mode: ensemble", "mode: data_parallel"))
        return ds

    def no_truth(ds):
        ds = ds.drop_vars([v for v in ds.data_vars if v in ("params_true", "qcf_true", "pull")])
        ds.attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("closure_")}
        return ds

    copy_to(runs["gan"], tmp_path / "passed.nc", passed_dp)
    copy_to(runs["gan"], tmp_path / "real-data.nc", no_truth)
    for i, name in enumerate((runs["mle"].name, runs["gan"].name, "passed.nc", "real-data.nc")):
        os.utime(tmp_path / name, (T0 + i, T0 + i))

    infos = list_runs(tmp_path)
    assert [r.name for r in infos] == [
        "real-data",
        "passed",
        "proxy1d-gan-20261201-110000",
        "proxy1d-mle-20261201-100000",
    ]
    by = {r.name: r for r in infos}
    gan, mle = by["proxy1d-gan-20261201-110000"], by["proxy1d-mle-20261201-100000"]
    assert (gan.problem, gan.method, gan.status, gan.members, gan.mode) == (
        "proxy1d",
        "gan",
        "completed",
        2,
        "ensemble",
    )
    assert (mle.method, mle.members) == ("mle", 1)
    assert gan.wall_seconds == 12.5 and mle.wall_seconds == 1.5
    assert gan.modified.timestamp() == pytest.approx(T0 + 1)
    assert gan.closure == ("passed" if open_results(runs["gan"]).attrs["closure_passed"] else "FAILED")
    assert by["passed"].closure == "passed" and by["passed"].mode == "data_parallel"
    assert by["real-data"].closure == "n/a"
    assert all(r.error == "" for r in infos)


def test_catalog_skips_temporary_files_and_lists_garbage_with_an_error(runs, tmp_path):
    copy_to(runs["mle"], tmp_path / "ok.nc")
    (tmp_path / ".x.nc.part").write_bytes(Path(runs["mle"]).read_bytes())  # a run being written
    (tmp_path / "y.nc.part").write_bytes(b"partial")
    (tmp_path / "garbage.nc").write_bytes(b"this is not HDF5")
    xr.Dataset({"a": ("t", [1.0, 2.0])}).to_netcdf(tmp_path / "foreign.nc", engine="h5netcdf")
    (tmp_path / "notes.txt").write_text("not a run")

    by = {r.name: r for r in list_runs(tmp_path)}
    assert set(by) == {"ok", "garbage", "foreign"}
    assert by["ok"].error == "" and by["ok"].method == "mle"
    assert by["garbage"].error and by["garbage"].problem == ""
    assert "params_pred" in by["foreign"].error
    with pytest.raises(NotARunError, match="foreign.nc"):
        load_run(tmp_path / "foreign.nc")
    with pytest.raises(NotARunError, match="garbage.nc"):
        load_run(tmp_path / "garbage.nc")
    assert list_runs(tmp_path / "missing") == []


def test_catalog_reads_a_file_again_only_when_it_changes(runs, tmp_path, monkeypatch):
    for key in ("gan", "mle"):
        copy_to(runs[key], tmp_path / runs[key].name)
    reads = []
    original = catalog.read_run_info
    monkeypatch.setattr(catalog, "read_run_info", lambda p: reads.append(Path(p).name) or original(p))

    first = list_runs(tmp_path)
    assert len(reads) == 2
    assert list_runs(tmp_path) == first and len(reads) == 2  # polling again costs no file reads

    def stopped(ds):
        ds.attrs["status"] = "stopped"
        return ds

    target = tmp_path / runs["mle"].name
    copy_to(runs["mle"], target, stopped)  # rewritten (renamed into place) by a later save
    os.utime(target, (T0 + 100, T0 + 100))
    again = list_runs(tmp_path)
    assert reads[2:] == [runs["mle"].name]
    assert {r.name: r.status for r in again}[target.stem] == "stopped"


# --- replay of finished runs --------------------------------------------------------------------------------------


def _sources(obj) -> list[dict]:
    fig = obj if isinstance(obj, BokehModel) else hv.render(obj, backend="bokeh")
    return [r.data_source.data for r in fig.renderers if hasattr(r, "data_source")]


def test_replayed_gan_run_pushes_each_members_history_and_the_loss_plot_draws_it(runs):
    from qcf_studio.layouts.results import replay

    ref = open_results(runs["gan"])
    plots, qcf_true = replay(load_run(runs["gan"]))
    rows = plots.rows()
    for m in range(2):
        mine = rows[rows["member"] == m]
        assert len(mine) == int(np.isfinite(ref["loss_g"].isel(member=m)).sum()) == ref.sizes["step"]
        np.testing.assert_allclose(mine["loss_d"], ref["loss_d"].isel(member=m))
        # The parameter trajectories the live view drew, from the file.
        np.testing.assert_allclose(mine["param_Nu"], ref["params_history"].isel(member=m).sel(param="Nu"))
        assert np.isfinite(mine["param_Nu"]).all()

    drawn = [np.asarray(s["loss_g"]) for s in _sources(plots.losses()) if "loss_g" in s]
    for m in range(2):
        expected = ref["loss_g"].isel(member=m).values
        assert any(len(d) == len(expected) and np.allclose(d, expected) for d in drawn)

    snap = plots.snapshot.data["members"][1]
    q, s = ref["qcf_pred"].isel(member=1).values, ref["qcf_pred_std"].isel(member=1).values
    np.testing.assert_allclose(snap["qcf_mean"], q)
    np.testing.assert_allclose(snap["qcf_lo"], q - s)
    np.testing.assert_allclose(snap["qcf_hi"], q + s)
    np.testing.assert_allclose(qcf_true["d"][1], ref["qcf_true"].sel(qcf="d"))
    assert plots.accuracy().renderers and plots.parameters().renderers
    for dm in (*plots.qcfs(qcf_true), *plots.observables()):
        hv.render(dm, backend="bokeh")


def test_replayed_mle_run_has_no_losses_but_its_parameters(runs):
    from qcf_studio.layouts.results import replay

    ref = open_results(runs["mle"])
    plots, _ = replay(load_run(runs["mle"]))
    rows = plots.rows()
    assert len(rows) == int(np.isfinite(ref["nll"]).sum()) and rows["loss_g"].isna().all()
    np.testing.assert_allclose(rows["param_bd"].iloc[-1], ref["params_pred"].sel(param="bd")[0])
    assert plots.losses().renderers  # a Bokeh figure already


def test_replayed_2d_run_shows_x_projections_like_the_live_view(runs):
    from qcf_studio.engine.problems import get_problem
    from qcf_studio.layouts.results import replay, true_qcf_projections

    ref = open_results(runs["proxy2d"])
    plots, qcf_true = replay(load_run(runs["proxy2d"]))
    snap = plots.snapshot.data["members"][0]
    y = ref["y"].values
    np.testing.assert_allclose(snap["qcf_mean"], np.trapezoid(ref["qcf_pred"].values[0], y, axis=-1), rtol=1e-6)
    assert np.asarray(snap["qcf2d_mean"]).shape == ref["qcf_pred"].shape[1:]
    edges, dens = plots.snapshot.data["data"]["rho"]
    width_y = np.diff(ref["bin_edges"].sel(coord="y").values[0])
    np.testing.assert_allclose(dens, (ref["hist_data"].values[0] * width_y).sum(axis=1))
    # The stored truth and the dashboard's computation from the problem agree.
    p = get_problem("proxy2d")
    np.testing.assert_allclose(
        true_qcf_projections(p, ref["params_true"].values)["rho"][1], qcf_true["rho"][1], rtol=1e-5
    )


# --- heat maps ----------------------------------------------------------------------------------------------------


def test_heatmap_ratio_is_prediction_over_truth_and_masked_where_the_truth_vanishes():
    from qcf_studio.layouts.heatmaps import qcf_heatmaps

    x, y = np.linspace(0.0, 1.0, 11), np.linspace(0.0, 1.0, 21)
    truth = np.outer(x * (1 - x), np.ones_like(y)) + 0.0  # zero along x = 0 and x = 1
    pred = truth.copy()
    pred[3, 7] *= 1.25
    pred[5, 2] *= 0.4  # beyond the colour range: the value stays, only its colour is clipped
    items = qcf_heatmaps(x, y, pred, 0.1 * truth, truth, name="rho")
    assert len(items) == 5
    ratio = items[2]
    values = ratio.dimension_values("ratio", flat=False)  # (len(y), len(x))
    assert values[7, 3] == pytest.approx(1.25) and values[2, 5] == pytest.approx(0.4)
    assert values[4, 4] == pytest.approx(1.0)
    assert np.isnan(values[:, 0]).all() and np.isnan(values[:, -1]).all()
    assert ratio.opts.get().kwargs["clim"] == (0.5, 1.5)
    xproj = items[3].get(1)  # the predicted curve: ∫ pred dy
    np.testing.assert_allclose(xproj.dimension_values(1)[3], np.trapezoid(pred[3], y))
    hv.render(hv.Layout(items).cols(5), backend="bokeh")
    assert len(qcf_heatmaps(x, y, pred, None, None)) == 3  # no truth: predicted and projections


def test_multiset2d_heatmaps_have_one_row_per_density_and_one_per_data_set(runs):
    from qcf_studio.layouts.heatmaps import observable_heatmaps, results_heatmaps

    ds = load_run(runs["multiset2d"])
    qcfs = results_heatmaps(ds)
    assert len(qcfs) == 3 * 5
    titles = [el.opts.get().kwargs.get("title", "") for el in qcfs]
    assert [t for t in titles if t.endswith("predicted / true")] == [f"{q} predicted / true" for q in "ABC"]
    obs = observable_heatmaps(ds)
    assert len(obs) == 4 * 2
    np.testing.assert_allclose(list(obs)[2].dimension_values(2, flat=False), ds["hist_data"].sel(observable="set2").T)
    hv.render(qcfs, backend="bokeh")
    hv.render(obs, backend="bokeh")
    with pytest.raises(ValueError, match="1D"):
        results_heatmaps(load_run(runs["mle"]))


def test_live_heatmaps_follow_the_snapshot_stream(runs):
    from qcf_studio.engine.problems import get_problem
    from qcf_studio.layouts.heatmaps import live_heatmaps, true_qcfs_2d
    from qcf_studio.layouts.results import replay

    ds = load_run(runs["proxy2d"])
    x, y, truth = true_qcfs_2d(get_problem("proxy2d"), ds["params_true"].values)
    plots, _ = replay(ds)
    (row,) = live_heatmaps(plots, x, y, truth)
    ratio = row[2][()]
    expected = ds["qcf_pred"].values[0, 0, 10, 20] / ds["qcf_true"].values[0, 10, 20]
    assert ratio.dimension_values(2, flat=False)[20, 10] == pytest.approx(expected, rel=1e-5)
    x_projection = row[3][()]
    (band,) = [e for e in x_projection if isinstance(e, hv.Area)]  # ±1σ: the generator spread, ∫ σ dy
    sigma = np.trapezoid(ds["qcf_pred_std"].values[0, 0], y, axis=-1)
    assert band.dimension_values("hi") - band.dimension_values("lo") == pytest.approx(2 * sigma, rel=1e-5)
    for dm in row:
        hv.render(dm, backend="bokeh")


def test_replayed_mle_run_draws_its_negative_log_likelihood_and_no_discriminator(runs):
    import panel as pn

    from qcf_studio.layouts.page import live_panels
    from qcf_studio.layouts.results import replay

    ref = open_results(runs["mle"])
    plots, qcf_true = replay(load_run(runs["mle"]))
    fig = plots.losses()
    assert fig.yaxis[0].axis_label.startswith("negative log-likelihood")
    drawn = [np.asarray(s["nll"]) for s in _sources(fig)]
    expected = ref["nll"].isel(member=0).values
    assert drawn and all(np.allclose(d, expected[np.isfinite(expected)]) for d in drawn)
    panes = pn.Column(*live_panels(plots, qcf_true, False))
    names = {getattr(o, "name", "") for o in panes.select(pn.pane.Bokeh)}
    assert "losses" in names and "accuracy" not in names  # a likelihood fit has no discriminator


# --- Panel views --------------------------------------------------------------------------------------------------


def test_runs_browser_opens_the_selected_run_below_the_table(runs):
    from qcf_studio.app.dashboard.views import RunsBrowser

    d = runs["gan"].parent
    browser = RunsBrowser(d, period_ms=None)
    browser.__panel__()
    assert "runs-table" in browser.table.css_classes
    names = list(browser.table.value["name"])
    assert names[:2] == ["multiset2d-gan", "proxy2d-gan"]
    assert {"name", "problem", "method", "status", "duration", "closure", "modified"} <= set(browser.table.value)
    assert len(browser.plot_area) == 0

    i = names.index("proxy1d-gan-20261201-110000")
    browser.table.selection = [i]
    assert browser.selected == [runs["gan"]] and browser.opened == runs["gan"]
    panes = [o for o in browser.plot_area.select(lambda o: getattr(o, "name", "") == "losses")]
    assert len(panes) == 1
    browser.table.selection = [i, names.index("proxy2d-gan")]
    assert browser.selected == [runs["proxy2d"], runs["gan"]] or browser.selected == [runs["gan"], runs["proxy2d"]]
    assert browser.opened == runs["proxy2d"]
    assert browser.plot_area.select(lambda o: getattr(o, "name", "") == "qcf-heatmaps")


def test_runs_browser_refresh_shows_new_runs_and_keeps_the_selection(runs, tmp_path):
    from qcf_studio.app.dashboard.views import RunsBrowser

    copy_to(runs["mle"], tmp_path / "old.nc")
    os.utime(tmp_path / "old.nc", (T0, T0))
    browser = RunsBrowser(tmp_path, period_ms=None)
    browser.table.selection = [0]
    copy_to(runs["gan"], tmp_path / "new.nc")
    (tmp_path / "broken.nc").write_bytes(b"nope")
    browser.refresh()
    names = list(browser.table.value["name"])
    assert set(names) == {"old", "new", "broken"}
    assert browser.selected == [tmp_path / "old.nc"] and browser.table.selection == [names.index("old")]
    browser.table.selection = [names.index("old"), names.index("broken")]
    assert browser.message.visible and "broken.nc" in browser.message.object
    assert browser.opened == tmp_path / "old.nc"  # the last good run stays on screen
