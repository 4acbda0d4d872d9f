"""Closure report and `qcf-studio export`: real (small) result files, real matplotlib output files."""

from __future__ import annotations

import io
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from matplotlib.image import imread

from qcf_studio.app.cli.commands import main
from qcf_studio.app.export import run as export_module
from qcf_studio.app.export.report import (
    PULLS,
    QCF,
    STATUS,
    closure_report,
    closure_verdict,
    report_markdown,
    verdict_text,
)
from qcf_studio.app.export.run import export_run, figures, markdown_to_html, open_results
from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.files import write_netcdf_atomic
from qcf_studio.engine.run.runner import measured_data, reference_fit, train_member
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import parse_spec

TINY = {"metrics_every": 5, "snapshot_every": 10, "batch_params": 16, "events_per_param": 32}


def _result(directory: Path, raw: dict) -> Path:
    spec = parse_spec(raw)
    data = measured_data(spec)
    members = [train_member(spec, m, data, HistorySink()) for m in range(spec.ensemble.members)]
    reference = reference_fit(spec, data) if spec.training.mle_reference else None
    ds = build_results(spec, data, members, 1.5, reference)
    return write_netcdf_atomic(ds, directory / f"{spec.name}.nc")


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three results files, built once: a 1D GAN run, a 1D MLE fit, a 2D GAN run with an MLE reference."""
    d = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine two threads spin against each other (4× slower)
    try:
        return {
            "gan1d": _result(
                d,
                {
                    "name": "gan1d",
                    "problem": {"kind": "proxy1d", "events": 3000, "seed": 3},
                    "training": {"steps": 20, **TINY},
                    "ensemble": {"members": 2},
                },
            ),
            "mle1d": _result(
                d,
                {
                    "name": "mle1d",
                    "problem": {"kind": "proxy1d", "events": 3000, "seed": 3},
                    "training": {"method": "mle", "steps": 30, **TINY},
                    "ensemble": {"members": 1},
                },
            ),
            "gan2d": _result(
                d,
                {
                    "name": "gan2d",
                    "problem": {"kind": "proxy2d", "events": 3000, "seed": 3},
                    "training": {"steps": 20, "mle_reference": True, **TINY},
                    "ensemble": {"members": 2},
                },
            ),
        }
    finally:
        torch.set_num_threads(threads)


def _load(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as f:
        return f.load()


def _criterion(criteria, name):
    (c,) = [c for c in criteria if c.name == name]
    return c


def _pdf_pages(data: bytes) -> int:
    """Page objects (``/Type /Page``, not the ``/Pages`` tree) of a PDF that matplotlib wrote."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def test_export_writes_every_format_of_a_gan_run(runs, tmp_path):
    out = tmp_path / "out"
    written = export_run(runs["gan1d"], "png,svg,pdf,html", out)
    names = ["qcfs", "parameters", "training", "observables"]
    expected = {f"gan1d-{n}.{fmt}" for n in names for fmt in ("png", "svg", "pdf")}
    expected |= {
        "gan1d-report.pdf",
        "gan1d-report.html",
        "gan1d-report.png",
        "gan1d-report.svg",
        "gan1d.nc",
        "gan1d-spec.yaml",
    }
    assert {p.name for p in written} == expected
    assert {p.name for p in out.iterdir()} == expected  # no temporaries left behind

    for n in [*names, "report"]:
        png = out / f"gan1d-{n}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(png)
        assert img.shape[0] >= 400 and img.shape[1] >= 600  # 7 × 4.5 in at 150 dpi is 1050 × 675
        ink = (img[..., :3] < 0.9).any(axis=-1).mean()
        assert 0.01 < ink < 0.9 and img[..., :3].std() > 0.05, f"{n}: blank-looking image"
        root = ET.parse(out / f"gan1d-{n}.svg").getroot()
        assert root.tag.endswith("svg")
        if n == "report":
            continue  # its PDF is the multipage report
        pdf = (out / f"gan1d-{n}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and _pdf_pages(pdf) == 1

    report = (out / "gan1d-report.pdf").read_bytes()
    assert report.startswith(b"%PDF-") and report.rstrip().endswith(b"%%EOF")
    assert _pdf_pages(report) == len(names) + 1  # the text page, then every figure

    page = (out / "gan1d-report.html").read_text(encoding="utf-8")
    ds = _load(runs["gan1d"])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert verdict_text(closure_report(ds)) in page
    assert page.count("<svg") >= len(names) and "<table>" in page and "name: gan1d" in page

    assert (out / "gan1d.nc").read_bytes() == runs["gan1d"].read_bytes()
    assert yaml.safe_load((out / "gan1d-spec.yaml").read_text())["name"] == "gan1d"


def test_2d_result_has_heat_maps_and_x_projections(runs, tmp_path):
    ds = _load(runs["gan2d"])
    figs = figures(ds)
    assert {"qcfs", "qcf_maps", "parameters", "training", "observables"} <= set(figs)
    (truth_line,) = [line for line in figs["qcfs"].axes[0].lines if line.get_label() == "truth"]
    y = ds["y"].values
    expected = np.trapezoid(ds["qcf_true"].isel(qcf=0).values, y, axis=-1)
    np.testing.assert_allclose(truth_line.get_ydata(), expected, rtol=1e-12)
    written = export_run(runs["gan2d"], ["png"], tmp_path)
    assert tmp_path / "gan2d-qcf_maps.png" in written
    assert "error ratio" in report_markdown(ds)  # the MLE reference's columns


def test_mle_result_has_no_training_figure(runs):
    figs = figures(_load(runs["mle1d"]))
    assert "training" not in figs and "likelihood" in figs
    errors = _criterion(closure_report(_load(runs["mle1d"])), "GAN/MLE errors")
    assert errors.passed is None and "reference itself" in errors.text


def test_the_report_says_what_campaigns_found_about_the_runs_kind_of_error(runs):
    gan = _criterion(closure_report(_load(runs["gan1d"])), "Error calibration")
    mle = _criterion(closure_report(_load(runs["mle1d"])), "Error calibration")
    assert not gan.decisive and "the generators' spread" in gan.text and "uncalibrated" in gan.text
    assert "found calibrated" in mle.text and "qcf-studio campaign" in mle.text
    assert "Error calibration" in report_markdown(_load(runs["gan1d"]))


@pytest.mark.parametrize("run", ["gan1d", "mle1d", "gan2d"])
def test_report_verdict_agrees_with_the_engines_closure_numbers(runs, run):
    ds = _load(runs[run])
    criteria = closure_report(ds)
    assert closure_verdict(criteria) is bool(ds.attrs["closure_passed"])
    assert _criterion(criteria, PULLS).value == pytest.approx(ds.attrs["closure_max_abs_pull"])
    assert _criterion(criteria, QCF).value == pytest.approx(ds.attrs["closure_max_qcf_dev_sigma"])


def _closing(ds: xr.Dataset) -> xr.Dataset:
    """The result with every member at the truth: pulls 0 and QCFs equal to the truth."""
    ds = ds.copy(deep=True)
    ds["params_pred"][:] = ds["params_true"].values
    ds["params_ensemble"][:] = ds["params_true"].values
    ds["pull"][:] = 0.0
    ds["qcf_pred"][:] = ds["qcf_true"].values
    return ds


def test_a_result_at_the_truth_passes(runs):
    ds = _closing(_load(runs["gan1d"]))
    criteria = closure_report(ds)
    assert closure_verdict(criteria) is True
    assert "**Verdict: Closure passed**" in report_markdown(ds)
    assert _criterion(criteria, QCF).value == pytest.approx(0.0, abs=1e-4)  # float32 predictions


def test_a_pull_of_5_fails_the_pull_criterion_naming_the_parameter(runs):
    ds = _closing(_load(runs["gan1d"]))
    ds["pull"].loc[{"param": "bu"}] = 5.0
    criteria = closure_report(ds)
    pulls = _criterion(criteria, PULLS)
    assert pulls.passed is False and pulls.value == 5.0
    assert "5.00 (bu)" in pulls.text and "beyond the 3σ limit" in pulls.text
    assert closure_verdict(criteria) is False
    assert verdict_text(criteria) == "Closure FAILED: Parameter pulls"


def test_a_stopped_run_does_not_pass(runs):
    ds = _closing(_load(runs["gan1d"]))
    ds.attrs["status"] = "stopped"
    criteria = closure_report(ds)
    status = _criterion(criteria, STATUS)
    assert status.passed is False and "stopped" in status.text
    assert closure_verdict(criteria) is False and "FAILED" in report_markdown(ds)


def test_without_truth_closure_is_not_judged_but_chi2_is_reported(runs, tmp_path):
    ds = _load(runs["gan1d"])
    real = ds.drop_vars([v for v in ("params_true", "qcf_true", "pull", "params_ensemble", "params_ensemble_err")])
    real.attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("closure_")}
    criteria = closure_report(real)
    assert closure_verdict(criteria) is None
    assert "cannot be judged" in _criterion(criteria, QCF).text
    chi2 = _criterion(criteria, "χ²/ndf")
    assert chi2.value == pytest.approx(float(ds["chi2_ndf"].max()))
    path = write_netcdf_atomic(real, tmp_path / "real.nc")
    written = export_run(path, "html", tmp_path / "out")
    assert "not judged" in (tmp_path / "out" / "real-report.html").read_text(encoding="utf-8")
    assert len(written) == 3  # report, NetCDF copy, spec


def test_a_failed_export_leaves_no_files(runs, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "report_html", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        export_run(runs["mle1d"], "png,html", out)
    assert list(out.iterdir()) == []


def test_report_html_escapes_markup():
    html = markdown_to_html("# run <b>\n\n- **FAIL** — a < b & **c**\n\n| p | v |\n|---|---|\n| <x> | 1 |\n")
    assert "<b>" not in html and "&lt;b&gt;" in html and "&lt;x&gt;" in html
    assert '<span class="label fail">FAIL</span>' in html and "<strong>c</strong>" in html


def test_open_results_rejects_files_that_are_not_results(runs, tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("not a NetCDF file")
    with pytest.raises(ValueError, match="notes.nc: not a NetCDF"):
        open_results(text)
    ds = _load(runs["mle1d"])
    bare = write_netcdf_atomic(ds[["hist_data"]].assign_attrs(spec=ds.attrs["spec"]), tmp_path / "data.nc")
    with pytest.raises(ValueError, match="data.nc: not a qcf-studio results file"):
        open_results(bare)


def test_cli_export_prints_the_written_files(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(runs["mle1d"]), "--format", "svg", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 7  # qcfs, parameters, likelihood, observables, report page; NetCDF copy; spec
    assert all(Path(p).is_file() and Path(p).parent == out for p in printed)


def test_cli_export_of_a_missing_file_exits_2_naming_it(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.nc"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qcf-studio: error:") and "nope.nc" in err
    assert not (tmp_path / "out").exists()


def test_cli_export_with_an_unknown_format_exits_2_and_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", str(runs["mle1d"]), "--format", "png,bmp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--format" in err and "bmp" in err and "png, svg, pdf, html" in err
    assert list(out.iterdir()) == []


def test_dashboard_downloads_give_valid_files_and_leave_nothing_behind(runs, tmp_path, monkeypatch):
    import tempfile
    import zipfile

    from qcf_studio.app.export.run import DOWNLOADS, download_filename, export_download

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the exports are made
    path = runs["gan1d"]
    got = {label: export_download(path, label) for label in DOWNLOADS}
    assert {label: name for label, (name, _) in got.items()} == {
        label: download_filename(path, label) for label in DOWNLOADS
    }
    with zipfile.ZipFile(io.BytesIO(got["PNG figures (zip)"][1])) as z:
        names = z.namelist()
        assert f"{path.stem}-qcfs.png" in names and all(n.endswith(".png") for n in names)
        assert all(z.read(n).startswith(b"\x89PNG\r\n\x1a\n") for n in names)
    pdf = got["PDF report"][1]
    figures_only = [n for n in names if not n.endswith("-report.png")]
    assert f"{path.stem}-report.png" in names  # the report's text page as an image
    assert pdf.startswith(b"%PDF-") and _pdf_pages(pdf) == len(figures_only) + 1  # the report, then every figure
    assert b"<svg" in got["HTML report"][1] and got["NetCDF"][1] == path.read_bytes()
    assert got["Spec (YAML)"][1].decode() == _load(path).attrs["spec"]
    with tarfile.open(fileobj=io.BytesIO(got["HEPData (tar.gz)"][1])) as tar:
        submission = yaml.safe_load_all(tar.extractfile("submission.yaml").read())
        assert any("data_file" in doc for doc in submission)  # a HEPData submission with its tables
    with zipfile.ZipFile(io.BytesIO(got["QCF replicas (zip)"][1])) as z:
        names = z.namelist()
        assert f"{path.stem}-grid/{path.stem}-replicas.nc" in names
        with xr.open_dataset(io.BytesIO(z.read(f"{path.stem}-grid/{path.stem}-replicas.nc")), engine="h5netcdf") as g:
            assert g["qcf_replicas"].sizes["replica"] > 2  # replica 0 (the mean) and the replicas
        assert any(n.endswith(".info") for n in names)  # proxy1d's QCFs as LHAPDF sets, in their folders
    assert list(tmp_path.iterdir()) == []


def test_downloads_a_run_cannot_give_are_disabled_and_say_why(runs, tmp_path, monkeypatch):
    import sys

    import panel as pn

    from qcf_studio.app.dashboard.views import downloads
    from qcf_studio.app.export.run import download_refusal

    ds = _load(runs["gan1d"])
    assert download_refusal(ds, runs["gan1d"], "QCF replicas (zip)") is None
    bare = ds.drop_vars("params_draws")  # a generator's spread with no draws of it: no replicas to give
    path = write_netcdf_atomic(bare, tmp_path / "nodraws.nc")
    why = download_refusal(bare, path, "QCF replicas (zip)")
    assert why is not None and "nodraws.nc" in why and "params_draws" in why
    monkeypatch.setitem(sys.modules, "hepdata_lib", None)  # import hepdata_lib raises ImportError
    assert "qcf-studio[io]" in download_refusal(bare, path, "HEPData (tar.gz)")
    assert download_refusal(bare, path, "PDF report") is None

    panel = downloads(path, bare)
    buttons = {b.label: b for b in panel.select(pn.widgets.FileDownload)}
    assert buttons["QCF replicas (zip)"].disabled and buttons["HEPData (tar.gz)"].disabled
    assert not buttons["PDF report"].disabled and not buttons["NetCDF"].disabled
    (note,) = [m for m in panel.select(pn.pane.Markdown) if "downloads-refused" in m.css_classes]
    assert note.visible and "QCF replicas (zip)" in note.object and "params\\_draws" in note.object


def test_the_calibration_note_of_a_bootstrap_run_depends_on_whether_a_campaign_used_its_settings(runs):
    from qcf_studio.engine.campaign.findings import FINDINGS

    base = _load(runs["gan1d"])

    def as_run_of(finding, **changes):
        ds = base.copy()
        spec = yaml.safe_load(ds.attrs["spec"])
        for dotted, value in {**finding.settings, **changes}.items():
            section, key = dotted.split(".")
            spec[section][key] = value
        ds.attrs.update(spec=yaml.safe_dump(spec), uncertainty="bootstrap")
        return _criterion(closure_report(ds), "Error calibration").text

    for finding in [f for f in FINDINGS if (f.problem, f.method, f.errors) == ("proxy1d", "gan", "bootstrap")]:
        text = as_run_of(finding)
        verdict = "calibrated" if finding.calibrated else "uncalibrated"
        assert "with this run's settings" in text and f"found them {verdict}" in text, text
        assert finding.numbers in text
        other = as_run_of(finding, **{"training.steps": finding.settings["training.steps"] + 1})
        assert "no campaign was made with this run's settings" in other and finding.describe() in other


@pytest.mark.parametrize("kind", ["proxy1d", "proxy2d"])
def test_default_spec_is_the_settings_a_campaign_found_calibrated(kind):
    """The recipe lives in the problem's defaults, the sample closure spec and the findings table: they must not
    drift apart."""
    from qcf_studio.engine.campaign.findings import findings_for, settings_of
    from qcf_studio.engine.spec import default_spec, load_spec

    sample = Path(__file__).parents[1] / "sample_data" / f"closure-{kind[-2:]}.yaml"
    for spec in (default_spec(kind), load_spec(sample)):
        settings = settings_of(spec.to_dict())
        covering = [f for f in findings_for(kind, "gan", "bootstrap") if f.covers(settings)]
        assert len(covering) == 1 and covering[0].calibrated, (sample, settings)


@pytest.mark.parametrize("name", ["campaign-1d", "campaign-2d", "campaign-multiset2d", "closure-gauss6"])
def test_every_sample_gan_campaign_has_its_finding(name):
    """A campaign shipped as a sample was run, and what it found is in the findings table under its settings."""
    from qcf_studio.engine.campaign.findings import findings_for, settings_of
    from qcf_studio.engine.spec import load_spec

    spec = load_spec(Path(__file__).parents[1] / "sample_data" / f"{name}.yaml")
    settings = settings_of(spec.to_dict())
    covering = [f for f in findings_for(spec.problem.kind, "gan", "bootstrap") if f.covers(settings)]
    assert len(covering) == 1 and covering[0].numbers, (name, settings)


def test_the_coverage_of_a_bootstrap_run_is_compared_with_student_t_for_its_members(runs):
    base = _load(runs["gan1d"])  # 2 members
    generator = _criterion(closure_report(base), "Coverage")
    assert "(expected 68% and 95%)" in generator.text and generator.limit == pytest.approx(0.6827, abs=1e-4)
    boot = base.copy()
    boot.attrs["uncertainty"] = "bootstrap"
    coverage = _criterion(closure_report(boot), "Coverage")
    # t with 1 degree of freedom (Cauchy) covers 2·arctan(z)/π: 0.5 within 1σ, 0.705 within 2σ
    assert "(expected 50% and 70% for errors from 2 bootstrap members" in coverage.text, coverage.text
    assert coverage.limit == pytest.approx(0.5)
    one_failed = boot.copy()
    one_failed["params_pred"] = boot["params_pred"].where(boot["member"] == 0)  # member 1 failed: no error at all
    assert "(expected 68% and 95%)" in _criterion(closure_report(one_failed), "Coverage").text
