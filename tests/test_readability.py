"""The dashboard reads at a glance, as TensorBoard users expect: smoothed training curves over faint raw ones,
log-scale losses, legends beside the plots, one title per panel, QCF panels that show the whole truth and band,
a link to Dask's own dashboard where there is one, and a header that names the cluster."""

from __future__ import annotations

import http.server
import threading
from types import SimpleNamespace

import holoviews as hv
import numpy as np
import panel as pn
import param
import pytest
from bokeh.models import Legend, LinearScale, LogScale

from qcf_studio.engine.problems import get_problem
from qcf_studio.layouts.live import LivePlots
from qcf_studio.layouts.smoothing import ema

hv.extension("bokeh", logo=False)


def _plots(members: int = 1, **kw) -> LivePlots:
    p = get_problem("proxy1d")
    return LivePlots(p.param_names, p.qcf_names, p.observable_names, p.truth, members, (p.lo, p.hi), **kw)


def _noisy_rows(n: int, seed: int = 0) -> list[dict]:
    """A default run's discriminator accuracy: a band of noise between 0 and 1 around 0.5."""
    rng = np.random.default_rng(seed)
    return [
        {
            "member": 0,
            "rank": 0,
            "step": 10 * (i + 1),
            "loss_g": 0.7 + 0.3 * rng.random(),
            "loss_d": 1.4 + 0.3 * rng.random(),
            "d_acc_real": rng.random(),
            "d_acc_fake": rng.random(),
        }
        for i in range(n)
    ]


# --- smoothing -------------------------------------------------------------------------------------------------


def test_ema_is_the_raw_curve_at_zero_debiased_and_continues_across_calls():
    rng = np.random.default_rng(1)
    raw = rng.random(200)
    np.testing.assert_array_equal(ema(raw, 0.0)[0], raw)
    whole, state = ema(raw, 0.9)
    first, mid = ema(raw[:77], 0.9)
    rest, end = ema(raw[77:], 0.9, mid)
    np.testing.assert_allclose(np.concatenate([first, rest]), whole)
    assert end == state
    assert whole[0] == raw[0]  # debiased: the first point is not pulled towards 0
    np.testing.assert_allclose(ema(np.full(50, 3.0), 0.95)[0], 3.0)
    assert whole[100:].std() < 0.4 * raw[100:].std()  # a band of noise becomes a readable line
    gappy, _ = ema([1.0, np.nan, 3.0], 0.5)
    assert np.isnan(gappy[1]) and gappy[2] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)  # a gap stays a gap
    with pytest.raises(ValueError, match="smoothing"):
        ema(raw, 1.0)


def test_loss_and_accuracy_curves_are_smoothed_with_the_raw_curve_faint_behind():
    plots = _plots()
    rows = _noisy_rows(120)
    plots.push_metrics(rows[:60])
    fig = plots.accuracy()  # a session's figure, made from what the buffers hold ...
    plots.push_metrics(rows[60:])  # ... then streamed the new rows
    raw = np.array([r["d_acc_real"] for r in rows])
    renderers = [r for r in fig.renderers if r.glyph.y in ("d_acc_real", "ema_d_acc_real")]
    faint, smooth = sorted(renderers, key=lambda r: r.glyph.y != "d_acc_real")
    assert faint.glyph.line_alpha < 0.5 <= smooth.glyph.line_alpha
    assert fig.renderers.index(faint) < fig.renderers.index(smooth)  # drawn first: behind
    data = smooth.data_source.data
    np.testing.assert_allclose(data["d_acc_real"], raw)
    np.testing.assert_allclose(data["ema_d_acc_real"], ema(raw, plots.smoothing)[0])
    assert np.std(data["ema_d_acc_real"][30:]) < 0.5 * np.std(raw[30:])
    legend = fig.legend[0]
    item = next(i for i in legend.items if i.label["value"] == "d_acc_real · member 0")
    assert set(item.renderers) == {faint, smooth}  # one entry hides both

    # The slider (on release) smooths every curve again; 0 is the raw curve.
    from qcf_studio.layouts.page import metric_panels

    panel = metric_panels(plots)
    slider = next(iter(panel.select(pn.widgets.FloatSlider)))
    assert slider.value == plots.smoothing and slider.start == 0.0
    with param.edit_constant(slider):  # what the browser sets when the slider is released
        slider.param.update(value=0.0, value_throttled=0.0)
    assert plots.smoothing == 0.0
    np.testing.assert_allclose(smooth.data_source.data["ema_d_acc_real"], raw)
    np.testing.assert_allclose(smooth.data_source.data["ema_loss_g"], [r["loss_g"] for r in rows])


def test_dashboard_draws_an_mle_specs_likelihood_and_keeps_the_sessions_smoothing(tmp_path):
    from pathlib import Path

    from qcf_studio.app.dashboard.page import Dashboard
    from qcf_studio.app.dashboard.runs import RunManager

    mle_text = (Path(__file__).parent.parent / "sample_data" / "closure-1d-mle.yaml").read_text()
    dash = Dashboard(RunManager(None, tmp_path / "runs", tmp_path), mle_text)
    try:
        panes = {p.name: p for p in dash.live.plot_area.select(pn.pane.Bokeh)}
        assert "accuracy" not in panes
        assert panes["losses"].object.yaxis[0].axis_label.startswith("negative log-likelihood")
        dash.live.plots.set_smoothing(0.3)
        dash.live.build(dash.spec)  # the next run's plots
        assert dash.live.plots.smoothing == 0.3
    finally:
        dash.dispose()


# --- log scale, legends, titles --------------------------------------------------------------------------------


def test_loss_panel_has_a_log_scale_toggle_and_mle_fits_plot_their_likelihood():
    from qcf_studio.layouts.page import metric_panels

    plots = _plots()
    plots.push_metrics(_noisy_rows(10))
    panel = metric_panels(plots)
    losses = next(p for p in panel.select(pn.pane.Bokeh) if p.name == "losses")
    toggle = next(iter(panel.select(pn.widgets.Checkbox)))
    assert isinstance(losses.object.y_scale, LinearScale)
    toggle.value = True
    assert isinstance(losses.object.y_scale, LogScale)
    assert len(losses.object.renderers[0].data_source.data["loss_g"]) == 10  # the same curves, on a log axis
    toggle.value = False
    assert isinstance(losses.object.y_scale, LinearScale)

    mle = _plots(method="mle")
    mle.push_metrics([{"member": 0, "step": s, "nll": -1000.0 - s} for s in (10, 20)])
    panel = metric_panels(mle)
    names = [p.name for p in panel.select(pn.pane.Bokeh)]
    assert names == ["losses"] and not list(panel.select(pn.widgets.Checkbox))  # an NLL may be negative
    assert not list(panel.select(pn.widgets.FloatSlider))  # the best value so far: smoothing would only lag
    fig = next(iter(panel.select(pn.pane.Bokeh))).object
    (line,) = fig.renderers
    assert line.glyph.y == "nll" and list(line.data_source.data["nll"]) == [-1010.0, -1020.0]


def test_legends_sit_beside_the_plots_in_small_type_and_panels_repeat_no_heading():
    from qcf_studio.layouts.page import live_panels

    plots = _plots(members=2)
    for fig in (plots.losses(), plots.accuracy(), plots.parameters()):
        assert not [o for o in fig.center if isinstance(o, Legend)]  # not over the curves ...
        (legend,) = [o for o in fig.right if isinstance(o, Legend)]  # ... but beside them
        assert legend.label_text_font_size == "8pt" and legend.click_policy == "hide"
    assert not plots.parameters().title.text  # the heading above it says what it shows
    headings = " ".join(v.object for v in live_panels(plots, None, False) if isinstance(v, pn.pane.Markdown))
    assert "Parameters" in headings and "data vs generated" in headings
    for dm in (*plots.qcfs(None), *plots.observables()):
        fig = hv.render(dm, backend="bokeh")
        assert fig.title.text not in headings and "data vs generated" not in fig.title.text
        assert [o for o in fig.right if isinstance(o, Legend)] and not [o for o in fig.center if isinstance(o, Legend)]


# --- QCF ranges ------------------------------------------------------------------------------------------------


def _snapshot(qcf_true, scale: float) -> dict:
    x = qcf_true["u"][0]
    mean = np.vstack([qcf_true["u"][1], qcf_true["d"][1]]) * scale
    return {
        0: {
            "x": x.tolist(),
            "qcf_mean": mean.tolist(),
            "qcf_lo": (0.9 * mean).tolist(),
            "qcf_hi": (1.1 * mean).tolist(),
            "hist_gen": [[0.0] * 10, [0.0] * 10],
        }
    }


def test_live_qcf_panels_show_the_whole_truth_and_band_each_on_its_own_axis():
    """u(x) reaches 5 at x = 0.1: the live panel cut it at 2.5, d(x)'s range (Panel linked the two axes)."""
    from qcf_studio.layouts.page import grid
    from qcf_studio.layouts.results import true_qcf_projections

    p = get_problem("proxy1d")
    plots = _plots()
    qcf_true = true_qcf_projections(p, p.truth)
    panels = grid(plots.qcfs(qcf_true), ncols=2)
    root = panels.get_root()  # as a browser session gets it (Panel links axes here)
    u_fig, d_fig = (pane._plots[root.ref["id"]][0].state for pane in panels)
    for scale in (0.5, 1.6):  # a band below the truth, then one above it
        plots.push_snapshot(_snapshot(qcf_true, scale), None)
        for fig, q in ((u_fig, "u"), (d_fig, "d")):
            top = max(qcf_true[q][1].max(), 1.1 * scale * qcf_true[q][1].max())
            assert top < fig.y_range.end < 1.15 * top, (q, scale, fig.y_range.end)
            assert fig.y_range.start <= 0.0
    assert u_fig.y_range is not d_fig.y_range


def test_compared_qcfs_show_the_whole_truth_and_bands_on_their_own_axes(tmp_path):
    import xarray as xr

    from qcf_studio.layouts.compare import compare_qcfs

    x = np.linspace(0.1, 0.99, 50)
    truth = np.vstack([5.0 * (1 - x) ** 3, 2.0 * (1 - x) ** 4])

    def run(scale: float) -> xr.Dataset:
        pred = (truth * scale)[None]
        return xr.Dataset(
            {
                "qcf_pred": (("member", "qcf", "x"), pred),
                "qcf_pred_std": (("member", "qcf", "x"), 0.1 * pred),
                "qcf_true": (("qcf", "x"), truth),
            },
            coords={"member": [0], "qcf": ["u", "d"], "x": x},
            attrs={"problem": "proxy1d"},
        )

    panels = compare_qcfs({"low": run(0.5), "high": run(1.2)})
    column = pn.Column(*(pn.pane.HoloViews(p) for p in panels))
    root = column.get_root()
    tops = [pane._plots[root.ref["id"]][0].subplots[(0, 0)].subplots["main"].state for pane in column]
    for fig, q in zip(tops, truth):
        assert 1.1 * 1.2 * q.max() < fig.y_range.end < 1.15 * 1.1 * 1.2 * q.max()
    assert tops[0].y_range is not tops[1].y_range


# --- Dask's own dashboard --------------------------------------------------------------------------------------


@pytest.fixture
def http_server():
    """A local HTTP server answering 200 on /status and 404 elsewhere (like a scheduler without the dashboard)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self.send_response(200 if self.path.startswith("/status") else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_cluster_tab_links_to_dasks_own_dashboard_when_the_scheduler_serves_one(http_server, monkeypatch):
    import qcf_studio.app.dashboard.cluster_view as cluster_view

    monkeypatch.setattr(cluster_view, "worker_rows", lambda client, names: [])

    class NoDashboard:  # a scheduler without an HTTP server: Client.dashboard_link raises KeyError
        scheduler = SimpleNamespace(address="tcp://127.0.0.1:8786")

        @property
        def dashboard_link(self) -> str:
            raise KeyError("dashboard")

    def view(client) -> cluster_view.ClusterView:
        return cluster_view.ClusterView(SimpleNamespace(client=client, run_names=dict))

    scheduler = SimpleNamespace(address="tcp://127.0.0.1:8786")
    served = view(SimpleNamespace(dashboard_link=f"{http_server}/status", scheduler=scheduler))
    assert f'href="{http_server}/status"' in served.dask_link.object and 'target="_blank"' in served.dask_link.object
    assert served.dask_link in list(served.__panel__())
    # The embedded cluster: an HTTP server under the name "dashboard" whose /status is not found.
    for client in (
        SimpleNamespace(dashboard_link=f"{http_server}/missing/status", scheduler=scheduler),
        NoDashboard(),
        SimpleNamespace(dashboard_link="", scheduler=scheduler),
        SimpleNamespace(dashboard_link="javascript:alert(1)", scheduler=scheduler),
    ):
        shown = view(client).dask_link.object
        assert "href" not in shown and "serves none" in shown
    quoted = view(SimpleNamespace(dashboard_link=f'{http_server}/status?"><script>', scheduler=scheduler))
    assert "<script>" not in quoted.dask_link.object


def test_the_header_names_the_cluster_and_leaves_the_clients_worker_records_alone(dask_client):
    from qcf_studio.app.cluster import cluster_headline

    workers = dask_client.scheduler_info(n_workers=-1)["workers"]
    line = cluster_headline(dask_client)
    assert line == f"Dask {dask_client.scheduler.address} · 2 workers, 2 threads"
    assert dask_client._scheduler_identity["workers"].keys() == workers.keys()  # the run manager reads these
    assert cluster_headline(None) == "no cluster"

    class Gone:  # a scheduler that went away: a line that says so, not an exception in the page's timer
        def sync(self, *args, **kwargs):
            raise OSError("Timed out trying to connect")

        scheduler = SimpleNamespace(identity=None)

    assert cluster_headline(Gone()) == "Dask unreachable (OSError)"
