"""The Campaign tab's parts on a real small campaign (gauss6, likelihood fits, a Dask LocalCluster): the shared
campaign manager, listing and reopening campaign folders, the plots, the tables, the view and the exports."""

from __future__ import annotations

import re
import shutil
import time
import zipfile
from pathlib import Path

import holoviews as hv
import numpy as np
import pytest
import xarray as xr
from bokeh.models import ColumnDataSource, Span
from scipy import stats as sps

from qcf_studio.app.campaign_files import NotACampaignError, list_campaigns, load_summary, open_campaign
from qcf_studio.app.dashboard.campaigns import CampaignManager
from qcf_studio.app.dashboard.runs import RunBusyError, RunManager
from qcf_studio.app.export.campaign import CAMPAIGN_DOWNLOADS, campaign_download, export_campaign
from qcf_studio.engine.campaign.plan import CampaignPlan
from qcf_studio.engine.campaign.stats import ONE_SIGMA, VERDICTS
from qcf_studio.engine.campaign.summary import build_summary
from qcf_studio.engine.results.files import write_netcdf_atomic
from qcf_studio.engine.spec import parse_spec
from qcf_studio.layouts.campaign import (
    PULL_EDGES,
    campaign_plots,
    coverage_plot,
    fits_table,
    pull_histogram,
    r_bv_plot,
    verdict_table,
    xi_plot,
)
from tests.conftest import small_spec

hv.extension("bokeh", logo=False)

REPLICAS = 6


def _spec(name: str = "g6camp", replicas: int = REPLICAS):
    return parse_spec(
        {
            "name": name,
            "problem": {"kind": "gauss6", "events": 2000, "seed": 3},
            "training": {"method": "mle", "steps": 200},
            "ensemble": {"members": 1},
            "campaign": {"replicas": replicas, "methods": ["mle"]},
        }
    )


def _wait(live, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while live.active:
        assert time.monotonic() < deadline, f"campaign still {live.status}: {live.progress_text()}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def finished(dask_client, tmp_path_factory):
    """A campaign run through the manager, as the Campaign tab starts it; with what was seen while it ran."""
    runs = RunManager(dask_client, tmp_path_factory.mktemp("runs"))
    campaigns = CampaignManager(runs)
    live = campaigns.start(_spec())
    seen = {"statuses": set(), "versions": set(), "refused_run": None, "refused_campaign": None}
    try:
        runs.start(small_spec())
    except RunBusyError as e:
        seen["refused_run"] = str(e)
    try:
        campaigns.start(_spec("other"))
    except RunBusyError as e:
        seen["refused_campaign"] = str(e)
    deadline = time.monotonic() + 60
    while live.active and time.monotonic() < deadline:
        seen["statuses"].add(live.status)
        seen["versions"].add(live.summary_version)
        time.sleep(0.05)
    _wait(live, 1)
    return runs, campaigns, live, seen


def test_the_manager_runs_a_campaign_and_refuses_runs_and_campaigns_meanwhile(finished):
    runs, campaigns, live, seen = finished
    assert "campaign is in progress" in seen["refused_run"]
    assert "campaign is in progress" in seen["refused_campaign"]
    assert live.status == "completed", live.error
    assert (live.done, live.failed, live.total) == (REPLICAS, 0, REPLICAS)
    assert live.folder == runs.runs_dir / "campaigns" / "g6camp"
    assert (live.folder / "summary.nc").is_file() and len(list(live.folder.glob("mle-r*.nc"))) == REPLICAS
    assert "running" in seen["statuses"]
    assert len(seen["versions"] - {0}) >= 2  # the summary was rebuilt while fits finished (and at the end)
    assert int(live.summary["n_fits"].sel({"method": "mle"})) == REPLICAS
    assert f"{REPLICAS} of {REPLICAS} fits done" in live.progress_text()
    assert not campaigns.busy
    with pytest.raises(Exception, match="another spec"):  # its folder holds another spec's campaign
        other = _spec().to_dict()
        other["problem"]["events"] = 3000
        campaigns.start(parse_spec(other))


def test_a_stopped_campaign_keeps_its_fits_and_a_restart_resumes_it(finished):
    runs, campaigns, _, _ = finished
    live = campaigns.start(_spec("stopme", replicas=40))
    deadline = time.monotonic() + 60
    while live.done < 1:
        assert time.monotonic() < deadline and live.active, live.error
        time.sleep(0.05)
    campaigns.stop()
    assert live.status == "stopping"
    _wait(live, 30)
    assert live.status == "stopped" and 1 <= live.done < 40
    kept = len(list(live.folder.glob("mle-r*.nc")))
    assert kept == live.done and (live.folder / "summary.nc").is_file()
    info = next(i for i in list_campaigns(runs.runs_dir) if i.name == "stopme")
    assert f"{kept}/40 fits (partial)" in info.label
    again = campaigns.start(_spec("stopme", replicas=40))  # the same spec: resumes, fits nothing twice
    campaigns.stop()
    _wait(again, 30)
    assert again.resumed == kept and again.done >= kept and again.status == "stopped"


def test_campaign_folders_are_listed_and_reopen_from_the_summary_or_from_the_fits(finished, tmp_path):
    runs, _, live, _ = finished
    info = next(i for i in list_campaigns(runs.runs_dir) if i.name == "g6camp")
    assert (info.name, info.problem, info.methods, info.completed, info.total) == (
        "g6camp",
        "gauss6",
        ("mle",),
        REPLICAS,
        REPLICAS,
    )
    assert f"{REPLICAS}/{REPLICAS} fits (complete)" in info.label
    ds, rebuilt = open_campaign(info.folder)
    assert not rebuilt and ds.attrs["kind"] == "qcf-studio campaign"
    np.testing.assert_allclose(ds["pull"].values, live.summary["pull"].values)

    # A partial campaign without summary.nc (a server stopped mid-way): rebuilt from its fit files, read-only.
    copy = tmp_path / "campaigns" / "g6camp"
    shutil.copytree(info.folder, copy)
    (copy / "summary.nc").unlink()
    for f in sorted(copy.glob("mle-r*.nc"))[4:]:
        f.unlink()
    before = sorted(p.name for p in copy.iterdir())
    (partial,) = list_campaigns(tmp_path)
    assert f"4/{REPLICAS} fits (partial)" in partial.label
    ds2, rebuilt = open_campaign(copy)
    assert rebuilt and int(ds2["n_fits"].values[0]) == 4
    np.testing.assert_allclose(ds2["pull"].values[:, :4], ds["pull"].values[:, :4])
    assert np.isnan(ds2["pull"].values[:, 4:]).all()
    assert sorted(p.name for p in copy.iterdir()) == before  # nothing written or moved

    # Where `qcf-studio campaign --out <runs_dir>` puts a campaign, beside the runs: listed too.
    shutil.copytree(info.folder, tmp_path / "cli-camp")
    assert {i.folder.name for i in list_campaigns(tmp_path)} == {"g6camp", "cli-camp"}


def test_a_summary_that_is_not_a_campaign_is_refused(finished, tmp_path):
    runs, _, live, _ = finished
    ds = load_summary(live.folder / "summary.nc")
    bad = write_netcdf_atomic(ds.assign_attrs(kind="something else"), tmp_path / "a.nc")
    with pytest.raises(NotACampaignError, match="not a campaign summary"):
        load_summary(bad)
    worse = write_netcdf_atomic(ds.drop_vars("r_bv"), tmp_path / "b.nc")
    with pytest.raises(NotACampaignError, match="r_bv"):
        load_summary(worse)
    words = ds.assign(error_dof=ds["error_dof"].astype(str))
    with pytest.raises(NotACampaignError, match="error_dof"):
        load_summary(write_netcdf_atomic(words, tmp_path / "c.nc"))
    older = load_summary(write_netcdf_atomic(ds.drop_vars(["error_dof", "coverage_expected"]), tmp_path / "d.nc"))
    assert _sources(coverage_plot(older, "mle"))  # a summary from before error_dof: drawn against N(0, 1)


def _sources(plot) -> list[dict]:
    fig = plot if hasattr(plot, "references") else hv.render(plot)
    return [dict(m.data) for m in fig.references() if isinstance(m, ColumnDataSource)]


def test_the_plots_show_the_summary_and_update_in_place(finished):
    live = finished[2]
    ds = live.summary
    empty = build_summary(CampaignPlan(_spec(), live.folder.parent), {})  # what the tab draws at the start
    pipe = hv.streams.Pipe(data=empty)
    plots = campaign_plots(pipe, empty)
    assert [len(plots[k]) for k in ("pulls", "coverage", "r_bv", "xi")] == [2, 1, 1, 6]  # p0 p1 · mle · · y1..y6
    renderer = hv.renderer("bokeh")
    drawn = {k: [renderer.get_plot(d) for d in v] for k, v in plots.items()}
    assert sum(sum(s["top"]) for s in _sources(drawn["pulls"][0].state) if "top" in s) == 0
    pipe.send(ds)  # as the tab does when fits finished: the same Bokeh models, new data
    for p, plot in zip(("p0", "p1"), drawn["pulls"]):
        (hist,) = [s for s in _sources(plot.state) if "top" in s]
        assert np.asarray(hist["left"])[0] == PULL_EDGES[0] and sum(hist["top"]) == REPLICAS
        pulls = ds["pull"].sel({"method": "mle", "param": p}).values
        assert np.array_equal(hist["top"], np.histogram(np.clip(pulls, -3.999, 3.999), PULL_EDGES)[0])
    observed = [
        s["observed"] for s in _sources(drawn["coverage"][0].state) if len(s.get("observed", [])) == ds.sizes["level"]
    ]
    assert any(np.allclose(o, ds["coverage"].sel({"method": "mle", "param": "p0"}).values) for o in observed)
    assert f"({REPLICAS} fits)" in drawn["coverage"][0].state.title.text
    (points,) = [s for s in _sources(drawn["r_bv"][0].state) if "r_bv" in s]
    np.testing.assert_allclose(points["r_bv"], ds["r_bv"].sel({"method": "mle"}).values)
    (curve,) = [s for s in _sources(drawn["xi"][0].state) if "xi_1sigma" in s]
    assert np.isfinite(curve["xi_1sigma"]).all() and len(curve["xi_1sigma"]) > 10  # the core range only
    assert np.nanmax(curve["xi_1sigma"]) <= 1
    for factory in (lambda: coverage_plot(ds, "mle"), lambda: r_bv_plot(ds), lambda: xi_plot(ds, "y2")):
        assert _sources(factory())  # the factories draw on their own too


def _bootstrap_summary(tmp_path: Path, replicas: int = 40, members: int = 4) -> xr.Dataset:
    """The summary of a GAN campaign of bootstrap fits, built from records as the driver keeps them: each fit the
    mean of ``members`` estimates with the error of their mean (no training: the statistics are the point)."""
    from qcf_studio.engine.campaign.plan import FitKey
    from qcf_studio.engine.campaign.summary import FitRecord
    from qcf_studio.engine.results import qcf_grids

    spec = parse_spec(
        {
            "name": "g6boot",
            "problem": {"kind": "gauss6", "events": 2000, "seed": 3},
            "training": {"method": "gan", "steps": 10},
            "ensemble": {"members": members, "bootstrap": True},
            "campaign": {"replicas": replicas, "methods": ["gan"]},
        }
    )
    plan = CampaignPlan(spec, tmp_path)
    truth = np.array([2.0, 1.0])
    shape = (6, qcf_grids(spec)[0].size)
    rng = np.random.default_rng(4)
    records = {}
    for r in range(replicas):
        draws = truth + 0.1 * rng.normal() + 0.1 * rng.normal(size=(members, 2))
        records[FitKey(r, "gan")] = FitRecord(
            FitKey(r, "gan"),
            "completed",
            1.0,
            estimate=draws.mean(0),
            error=draws.std(0, ddof=1) * np.sqrt(1 + 1 / members),
            truth=truth,
            qcf_estimate=np.ones(shape),
            qcf_error=np.full(shape, 0.1),
            qcf_truth=np.ones(shape),
            draws=draws,
            dof=members - 1.0,
        )
    return build_summary(plan, records)


def test_errors_from_few_bootstrap_members_are_judged_and_drawn_against_student_t(tmp_path):
    ds = _bootstrap_summary(tmp_path)
    assert set(ds["error_dof"].values.ravel()) == {3.0}
    one_sigma = ds["coverage_expected"].sel({"method": "gan"}).values[ds["level"].values.tolist().index(ONE_SIGMA)]
    assert one_sigma == pytest.approx(0.609, abs=1e-3)
    criterion = ds.attrs["criterion_gan"]
    assert re.fullmatch(
        r"\d of 2 parameters with R_bv in \[0\.8, 1\.25\] and 68\.3% inside the coverage interval \(40 fits\); "
        r"\d of 2 with the 60\.9% that right errors from 4 bootstrap members cover",
        criterion,
    )
    few = _bootstrap_summary(tmp_path / "few", replicas=6).attrs["criterion_gan"]  # counts, but not yet a claim
    assert few.startswith("too few fits to judge (6, at least 10); so far ") and "(6 fits)" in few, few
    renderer = hv.renderer("bokeh")
    coverage = renderer.get_plot(coverage_plot(ds, "gan")).state
    legend = [item.label["value"] for item in coverage.legend[0].items]
    assert "calibrated, pulls t(3)" in legend
    curves = [s for s in _sources(coverage) if len(s.get("observed", [])) == 101 and "observed_hi" not in s]
    assert any(np.isclose(np.interp(ONE_SIGMA, s["nominal"], s["observed"]), 0.609, atol=2e-3) for s in curves)
    pulls = renderer.get_plot(pull_histogram(ds, "p0")).state
    (dashed,) = [s for s in _sources(pulls) if "fits" in s and "top" not in s]
    peak = np.max(dashed["fits"]) / (40 * (PULL_EDGES[1] - PULL_EDGES[0]))
    assert peak == pytest.approx(sps.t.pdf(0, 3), rel=1e-3)  # not N(0, 1)'s 0.399
    assert [item.label["value"] for item in pulls.legend[0].items] == ["gan", "gan: t(3)"]
    xi = renderer.get_plot(xi_plot(ds, "y1")).state
    lines = sorted(round(span.location, 3) for span in xi.select({"type": Span}))
    assert lines == [0.609, 0.683]
    table = verdict_table(ds)
    assert set(table["verdict"]) <= set(VERDICTS)


def test_the_tables_hold_a_row_per_parameter_and_per_fit(finished):
    ds = finished[2].summary
    verdicts = verdict_table(ds)
    assert list(verdicts["param"]) == ["p0", "p1"] and set(verdicts["fits"]) == {REPLICAS}
    assert verdicts["r_bv_interval"].str.startswith("[").all() and verdicts["verdict"].str.len().gt(0).all()
    fits = fits_table(ds)
    assert len(fits) == REPLICAS and set(fits["status"]) == {"completed"} and (fits["pull_max"] >= 0).all()


def test_export_writes_png_svg_pdf_and_html(finished, tmp_path):
    live = finished[2]
    files = export_campaign(live.folder / "summary.nc", "png,svg,pdf,html", tmp_path / "out")
    names = {f.name for f in files}
    for fig in ("pulls", "coverage", "r_bv", "xi_1sigma"):
        assert {f"g6camp-{fig}.png", f"g6camp-{fig}.svg", f"g6camp-{fig}.pdf"} <= names
    assert {"g6camp-report.pdf", "g6camp-report.html", "g6camp-report.png"} <= names
    magic = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<?xml", ".pdf": b"%PDF-", ".html": b"<!DOCTYPE html>"}
    for f in files:
        data = f.read_bytes()
        assert len(data) > 1000 and data.startswith(magic[f.suffix]), f
    page = (tmp_path / "out" / "g6camp-report.html").read_text()
    assert "<svg" in page and "R_bv" in page and "calibrated" in page or "confident" in page
    name, zipped = campaign_download(live.summary, "g6camp", "PNG figures (zip)")
    with zipfile.ZipFile(__import__("io").BytesIO(zipped)) as z:
        assert len(z.namelist()) == 5 and name == "g6camp-figures-png.zip"
    assert set(CAMPAIGN_DOWNLOADS) >= {"PDF report", "HTML report"}


def test_the_tab_reopens_a_campaign_escapes_its_text_and_opens_a_fit(finished, tmp_path):
    from qcf_studio.app.dashboard.campaign_view import CampaignView

    runs, campaigns, live, _ = finished
    opened: list[Path] = []
    view = CampaignView(campaigns, get_spec=lambda: _spec(), open_fit=opened.append, period_ms=None)
    assert any("g6camp" in label for label in view.picker.options)
    view.picker.value = str(live.folder)
    assert "reopened" in view.status.object and f"**{REPLICAS} fits**" in view.plotted.object
    assert len(view.verdicts.value) == 2 and len(view.fits.value) == REPLICAS
    view.fits.selection = [3]
    assert opened == [live.folder / "mle-r0003.nc"]

    # Text from a summary file is shown as text: a hostile name cannot inject markup.
    hostile = tmp_path / "campaigns" / "evil"
    shutil.copytree(live.folder, hostile)
    ds = xr.load_dataset(hostile / "summary.nc", engine="h5netcdf")
    (hostile / "summary.nc").unlink()
    write_netcdf_atomic(
        ds.assign_attrs(name="<img src=x onerror=alert(1)>", criterion_mle="**b** `c`"), hostile / "summary.nc"
    )
    view.reopen(hostile)
    assert "<img" not in view.heading.object and "&lt;img" in view.heading.object
    assert "\\*\\*b\\*\\*" in view.criteria.object
    view.dispose()


def test_the_form_applies_to_the_editor_spec(finished):
    from qcf_studio.app.dashboard.campaign_view import CampaignView

    spec = small_spec()  # proxy1d, gan, no campaign section
    view = CampaignView(finished[1], get_spec=lambda: spec, open_fit=lambda p: None, period_ms=None)
    view.prefill(spec)
    assert view.methods.value == ["gan"]
    view.prefill(_spec(replicas=12))
    assert (view.replicas.value, view.truths.value, view.methods.value) == (12, "fixed", ["mle"])
    view.replicas.value, view.truths.value, view.methods.value = 30, "prior", ["gan", "mle"]
    made = view.campaign_spec()
    assert made.campaign.replicas == 30 and made.campaign.truths == "prior" and made.campaign.methods == ["gan", "mle"]
    assert made.problem.kind == "proxy1d" and made.name == spec.name
    view.replicas.value = 1
    view._on_start(None)
    assert view.message.visible and "campaign.replicas" in view.message.object
    view.dispose()
