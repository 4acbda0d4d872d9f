"""The public Python API (``import qcf_studio``): its pinned surface, a cheap import, and each function doing what
its command or view does, on a real Dask cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import panel as pn
import pytest

import qcf_studio
from tests.run_files import run_spec

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = [
    "__version__",
    "SpecError",
    "validate",
    "run",
    "start",
    "open_run",
    "campaign",
    "export",
    "live_view",
    "runs_view",
    "compare_view",
]


def test_the_public_api_is_pinned_and_every_function_has_an_example():
    assert qcf_studio.__all__ == PUBLIC
    for name in PUBLIC:
        obj = getattr(qcf_studio, name)
        if callable(obj) and name != "SpecError":
            assert "Example::" in (obj.__doc__ or ""), name


def test_importing_it_imports_neither_torch_nor_dask_nor_panel():
    code = (
        "import sys, qcf_studio; heavy = {'torch', 'distributed', 'dask', 'panel', 'holoviews', 'bokeh', 'xarray'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_users_engine_folder_or_app_module_does_not_shadow_the_package(tmp_path):
    # a notebook's working folder is first on sys.path: names like engine/ and app.py are common there
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("raise RuntimeError('the user engine was imported')\n")
    for name in ("app", "layouts", "benchmarks"):
        (tmp_path / f"{name}.py").write_text(f"raise RuntimeError('the user {name} was imported')\n")
    spec = ROOT / "sample_data" / "closure-1d-mle.yaml"
    code = (
        "import qcf_studio; from qcf_studio.engine.run.runner import measured_data; "
        f"spec = qcf_studio.validate({str(spec)!r}); print(spec.name, measured_data(spec).events.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "closure-1d-mle"


def test_validate_takes_a_file_yaml_text_a_dict_or_a_spec_and_names_the_bad_field(tmp_path):
    path = ROOT / "sample_data" / "closure-1d.yaml"
    from_file = qcf_studio.validate(path)
    assert qcf_studio.validate(str(path)) == from_file
    assert qcf_studio.validate(path.read_text()) == from_file
    assert qcf_studio.validate(from_file.to_dict()) == from_file
    assert qcf_studio.validate(from_file) == from_file
    with pytest.raises(qcf_studio.SpecError, match=r"^training\.steps: ") as e:
        qcf_studio.validate({"name": "x", "training": {"steps": -1}})
    assert e.value.field == "training.steps"
    with pytest.raises(qcf_studio.SpecError, match="^spec: cannot read"):
        qcf_studio.validate(str(tmp_path / "missing.yaml"))
    with pytest.raises(qcf_studio.SpecError, match="problem.colour"):
        qcf_studio.validate("name: x\nproblem: {kind: proxy1d, colour: red}\n")


def test_run_on_a_client_returns_the_results_saves_them_and_leaves_the_client_open(dask_client, tmp_path):
    spec = run_spec("proxy1d", members=2)
    ds = qcf_studio.run(spec, cluster=dask_client, progress=False, out=tmp_path / "runs")
    assert ds.attrs["status"] == "completed" and ds.sizes["member"] == 2
    saved = Path(ds.encoding["source"])
    assert saved.parent == tmp_path / "runs" and saved.name.startswith("proxy1d-gan-")
    again = qcf_studio.open_run(saved)
    assert (again.params_pred == ds.params_pred).all() and again.encoding["source"] == str(saved)
    assert dask_client.status == "running"


def test_run_without_a_cluster_starts_an_embedded_one_and_closes_it_and_saves_nothing_without_out(
    tmp_path, monkeypatch, capsys
):
    import qcf_studio.app.cluster  # noqa: F401 (read as app.cluster)
    from qcf_studio import app

    closed = []
    close = app.cluster.close
    monkeypatch.setattr(app.cluster, "close", lambda client: (closed.append(client), close(client)))
    monkeypatch.chdir(tmp_path)
    spec = run_spec("gauss6", "mle").to_dict()
    spec["cluster"] = {"workers": 1}
    ds = qcf_studio.run(spec)
    assert ds.attrs["status"] == "completed" and "source" not in ds.encoding
    assert len(closed) == 1 and closed[0].status == "closed"
    assert list(tmp_path.iterdir()) == []
    assert "gauss6-mle" in capsys.readouterr().err  # the progress lines


def test_start_trains_in_the_background_with_a_live_view_and_its_result(dask_client, tmp_path):
    fit = qcf_studio.start(run_spec("proxy1d", members=2, steps=40), cluster=dask_client)
    view = fit.view()
    assert isinstance(qcf_studio.live_view(fit), type(view))
    ds = fit.result(timeout=300)
    assert fit.done() and fit.status == "completed" and fit.path is None
    assert ds.attrs["status"] == "completed"
    view.refresh()
    assert "**completed**" in view.status.object and view.progress.value == view.progress.max
    plots = view.live.plots
    assert len(plots.buffers[(0, 0)].data) > 0  # the losses' rows arrived
    assert isinstance(pn.panel(view), pn.viewable.Viewable)
    assert "completed" in repr(fit)
    view.dispose()


def test_a_spec_the_cluster_cannot_host_fails_the_fit_with_the_reason(dask_client):
    spec = run_spec("proxy1d").to_dict()
    spec["cluster"] = {"workers": 2, "mode": "data_parallel", "ranks": 8}
    spec["limits"] = {"ranks": 8}
    fit = qcf_studio.start(spec, cluster=dask_client)
    with pytest.raises(RuntimeError, match="failed"):
        fit.result(timeout=120)


def test_export_and_the_views_of_saved_runs(runs, tmp_path):
    written = qcf_studio.export(runs["gan"], tmp_path / "figs")
    assert written and all(p.exists() for p in written)
    assert {p.suffix for p in written} == {".png", ".nc", ".yaml"}
    browser = qcf_studio.runs_view(runs["gan"].parent, open=runs["gan"])
    assert len(browser.table.value) == len(list(runs["gan"].parent.glob("*.nc")))
    assert browser.opened == runs["gan"]
    compare = qcf_studio.compare_view(runs["gan"].parent, runs=[runs["gan"], runs["mle"]])
    assert compare.table.visible and len(compare.plot_area) > 0
    with pytest.raises(ValueError, match="not readable runs"):
        qcf_studio.compare_view(runs["gan"].parent, runs=[tmp_path / "nope.nc"])
    assert len(qcf_studio.live_view(runs["mle"])) > 0
    for view in (browser, compare):
        view.dispose()


def test_campaign_fits_the_replicas_and_returns_the_summary(dask_client, tmp_path):
    summary = qcf_studio.campaign(
        run_spec("gauss6", "mle"), tmp_path, replicas=3, methods=["mle"], cluster=dask_client, progress=False
    )
    assert list(summary["method"].values) == ["mle"] and summary.sizes["replica"] == 3
    assert (tmp_path / "gauss6-mle" / "summary.nc").is_file()
    written = qcf_studio.export(tmp_path / "gauss6-mle" / "summary.nc", tmp_path / "figs", formats=["png"])
    assert any(p.name.endswith(".png") for p in written)
