"""Files from someone else: uploads, problem.data and results files that try to read the server's files,
exhaust its memory, inject HTML into the page or crash a view; each is refused with a short message."""

from __future__ import annotations

import html
import io
import time
from pathlib import Path

import h5py
import numpy as np
import panel as pn
import pytest
import xarray as xr

from qcf_studio.app.catalog import NotARunError, list_runs, load_run
from qcf_studio.app.cli.commands import main as cli_main
from qcf_studio.app.dashboard.upload import UploadError, read_measured_upload, save_upload
from qcf_studio.engine.data.datafiles import DataFileError, read_measured_file
from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.files import netcdf_bytes, write_netcdf_atomic
from qcf_studio.engine.run.runner import train_member
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import parse_spec

SECRET = "the-server-secret-4711"


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    """A file the server can read and no upload may reveal."""
    path = tmp_path_factory.mktemp("private") / "secret.txt"
    path.write_text((SECRET + "\n") * 20)
    return path


@pytest.fixture(scope="module")
def good_netcdf() -> bytes:
    p = get_problem("proxy1d")
    return netcdf_bytes(make_pseudo_data(p, np.asarray(p.truth), 500, seed=2).to_xarray())


def _with_events(tmp_path: Path, name: str, make) -> Path:
    """A measured-data NetCDF file (as `qcf-studio data` writes it) whose `events` variable is made by ``make``."""
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.attrs["problem"] = "proxy1d"
        make(f)
        f["xsec"] = np.ones(2)
        f["xsec_err"] = np.full(2, 0.1)
    return path


def _external(secret: Path):
    return lambda f: f.create_dataset("events", shape=(2, 128), dtype="u1", external=[(str(secret), 0, 256)])


def _virtual(secret_h5: Path):
    def make(f):
        layout = h5py.VirtualLayout(shape=(2, 100), dtype="f8")
        layout[:] = h5py.VirtualSource(str(secret_h5), "x", shape=(2, 100))
        f.create_virtual_dataset("events", layout)

    return make


@pytest.fixture
def hostile_files(tmp_path, secret_file) -> dict[str, Path]:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.full((2, 100), 0.5)
    return {
        "external storage": _with_events(tmp_path, "external.nc", _external(secret_file)),
        "virtual dataset": _with_events(tmp_path, "virtual.nc", _virtual(other)),
        "external link": _with_events(
            tmp_path, "link.nc", lambda f: f.__setitem__("events", h5py.ExternalLink(str(other), "x"))
        ),
        "declared size": _with_events(
            tmp_path,
            "bomb.nc",
            lambda f: f.create_dataset(
                "events", shape=(2, 60_000_000), dtype="f8", chunks=(1, 1_000_000), compression="gzip", fillvalue=0.5
            ),
        ),
    }


def test_uploads_that_would_read_other_files_or_declare_huge_data_are_refused_unread(hostile_files, secret_file):
    for what, path in hostile_files.items():
        content = path.read_bytes()
        assert len(content) < 20_000  # the bomb declares 916 MiB in a few kB
        start = time.perf_counter()
        with pytest.raises(UploadError) as err:
            read_measured_upload(path.name, content, "proxy1d")
        assert time.perf_counter() - start < 1.0, what
        message = str(err.value)
        assert path.name in message and SECRET not in message, (what, message)
        assert {
            "external storage": "external files",
            "virtual dataset": "virtual dataset",
            "external link": "external link",
            "declared size": "declare more than",
        }[what] in message


def test_problem_data_that_would_read_other_files_is_refused_by_validate(hostile_files, tmp_path, capsys):
    for what, path in hostile_files.items():
        spec = tmp_path / f"{path.stem}.yaml"
        spec.write_text(parse_spec({"name": "x", "problem": {"data": str(path)}}).to_yaml())
        assert cli_main(["validate", str(spec)]) == 2, what
        err = capsys.readouterr().err
        assert "problem.data" in err and SECRET not in err, (what, err)
        with pytest.raises(DataFileError):
            read_measured_file(path, "proxy1d")


def test_a_csv_or_corrupt_problem_data_is_refused_before_dispatch_and_a_good_csv_is_read(tmp_path, good_netcdf, capsys):
    bad_csv = tmp_path / "events.csv"
    bad_csv.write_text("observable,x\nsigma1,0.5\n")
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(good_netcdf[:4000])
    for path, words in ((bad_csv, "at least 100 per observable"), (corrupt, "not a readable NetCDF-4 file")):
        spec = tmp_path / f"{path.stem}.yaml"
        spec.write_text(parse_spec({"name": "x", "problem": {"data": str(path)}}).to_yaml())
        assert cli_main(["validate", str(spec)]) == 2
        assert words in capsys.readouterr().err
        assert cli_main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 2  # refused before any cluster
        assert words in capsys.readouterr().err and not (tmp_path / "runs").exists()
    data = read_measured_upload("d.nc", good_netcdf, "proxy1d")
    csv = tmp_path / "good.csv"
    names = get_problem("proxy1d").observable_names
    lines = [f"# xsec: {', '.join(f'{n}={v}±{e}' for n, v, e in zip(names, data.xsec, data.xsec_err))}", "observable,x"]
    lines += [f"{n},{x!r}" for o, n in enumerate(names) for x in data.events[o, :, 0].tolist()]
    csv.write_text("\n".join(lines) + "\n")
    spec = tmp_path / "good.yaml"
    spec.write_text(parse_spec({"name": "x", "problem": {"data": str(csv)}}).to_yaml())
    assert cli_main(["validate", str(spec)]) == 0
    assert "500 events/observable" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda ds: ds.assign(events=ds["events"].astype(str)), "variable 'events' holds text"),
        (lambda ds: ds.assign(events=ds["events"] * (1 + 0j)), "variable 'events' holds complex numbers"),
        (lambda ds: ds.assign(xsec=ds["xsec"].astype(str)), "variable 'xsec' holds text"),
        (lambda ds: ds.assign(weights=ds["events"] * 1j), "variable 'weights' holds complex numbers"),
        (lambda ds: ds.assign_attrs(problem=np.array([1, 2])), "the data are for problem array"),
    ],
)
def test_problem_data_of_the_wrong_value_types_is_refused_by_validate_and_run_before_any_cluster(
    tmp_path, good_netcdf, capsys, edit, words
):
    """Text or complex values once passed validate (or crashed it) and failed `run` after dispatch."""
    ds = xr.open_dataset(io.BytesIO(good_netcdf), engine="h5netcdf").load()
    path = write_netcdf_atomic(edit(ds), tmp_path / "odd-values.nc")
    spec = tmp_path / "odd.yaml"
    spec.write_text(parse_spec({"name": "x", "problem": {"data": str(path)}}).to_yaml())
    assert cli_main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert words in err and "odd-values.nc" in err and len(err.splitlines()) == 1, err
    assert str(float(ds["events"][0, 0])) not in err  # the file's values are not echoed
    start = time.perf_counter()
    assert cli_main(["run", str(spec), "--out", str(tmp_path / "runs")]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert time.perf_counter() - start < 10  # refused before any cluster started


def test_a_problem_data_truth_that_is_not_numbers_is_dropped_and_the_events_are_used(tmp_path, good_netcdf):
    ds = xr.open_dataset(io.BytesIO(good_netcdf), engine="h5netcdf").load()
    path = write_netcdf_atomic(ds.assign(params_true=ds["params_true"].astype(str)), tmp_path / "text-truth.nc")
    data = read_measured_file(path, "proxy1d")  # build_results failed on it after training
    assert data.truth is None and data.events.shape == (2, 500, 1)


def test_upload_names_with_nul_and_markup_are_cleaned_and_uploads_are_capped(good_netcdf, tmp_path):
    data = read_measured_upload("ev\x00il<img src=x>.nc", good_netcdf, "proxy1d")
    path = save_upload(data, tmp_path, "ev\x00il<img src=x>.nc")
    assert path.parent == tmp_path and "\x00" not in path.name and "<" not in path.name
    save_upload(data, tmp_path, "b.nc", max_files=2)
    with pytest.raises(UploadError, match="holds 2 files, the most it may"):
        save_upload(data, tmp_path, "c.nc", max_files=2)
    with pytest.raises(UploadError, match="would pass its limit"):
        save_upload(data, tmp_path, "c.nc", max_total_bytes=path.stat().st_size)
    assert len(list(tmp_path.glob("*.nc"))) == 2


# --- results files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> xr.Dataset:
    spec = parse_spec(
        {
            "name": "tiny",
            "problem": {"kind": "proxy1d", "events": 1000, "seed": 2},
            "training": {
                "steps": 4,
                "metrics_every": 2,
                "snapshot_every": 4,
                "batch_params": 8,
                "events_per_param": 8,
                "gen_width": 8,
                "disc_width": 8,
            },
            "ensemble": {"members": 1},
        }
    )
    p = get_problem("proxy1d")
    data = make_pseudo_data(p, np.asarray(p.truth), 1000, seed=2)
    return build_results(spec, data, [train_member(spec, 0, data, HistorySink())], 1.0)


def _rendered_html(pane: pn.pane.Markdown) -> str:
    """The HTML the browser inserts for a Markdown pane (Panel escapes it for transport)."""
    return html.unescape(pane._transform_object(pane.object)["object"])


def test_markup_in_a_results_file_is_shown_as_text_never_as_html(result, tmp_path):
    from qcf_studio.app.dashboard.views import RunsBrowser

    evil = "<img src=x onerror=alert(1)>"
    ds = result.copy()
    ds.attrs.update(method=evil, errors=f"```\n{evil}\n```\n<script>alert(2)</script>", name=evil)
    path = write_netcdf_atomic(ds, tmp_path / "evil.nc")
    browser = RunsBrowser(tmp_path, period_ms=None)
    browser.open(path)
    assert not browser.message.visible, browser.message.object
    markdown = [p for p in browser.plot_area.select(pn.pane.Markdown)]
    htmls = [p.object for p in browser.plot_area.select(pn.pane.HTML) if not isinstance(p, pn.pane.Markdown)]
    shown = [_rendered_html(p) for p in markdown] + htmls
    assert any("&lt;img src=x onerror=alert(1)&gt;" in h for h in shown)  # the value is there, as text
    for h in shown:
        assert "<img" not in h and "<script" not in h, h
    assert {r.name: r.method for r in list_runs(tmp_path)}["evil"].startswith("<img")  # a plain-text table cell


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda ds: ds.drop_vars("qcf_pred"), "variable 'qcf_pred' is missing"),
        (lambda ds: ds.drop_vars("hist_gen"), "variable 'hist_gen' is missing"),
        (
            lambda ds: ds.assign(params_pred=(("member", "step"), np.zeros((ds.sizes["member"], ds.sizes["step"])))),
            "variable 'params_pred' has dimensions",
        ),
        (lambda ds: ds.isel(bin_edge=slice(0, 3)), "bin_edges"),
        (lambda ds: ds.assign_attrs(status="<b>done</b>"), "attribute 'status' is '<b>done</b>'"),
        (lambda ds: ds.assign_attrs(wall_seconds="soon"), "attribute 'wall_seconds' is not a number"),
        (lambda ds: ds.assign_attrs(spec="a: " + "x" * 1_100_000), "attribute 'spec' has more than"),
        (lambda ds: ds.isel(member=slice(0, 0)), "no member"),
        (lambda ds: ds.assign_attrs(problem="<i>nope</i>"), "problem '<i>nope</i>' is not registered"),
    ],
)
def test_inconsistent_results_files_get_a_message_in_the_runs_tab_and_from_export(
    result, tmp_path, edit, words, capsys
):
    from qcf_studio.app.dashboard.views import RunsBrowser

    path = write_netcdf_atomic(edit(result.copy()), tmp_path / "odd.nc")
    with pytest.raises(NotARunError, match="odd.nc") as err:
        load_run(path)
    assert words in str(err.value)
    browser = RunsBrowser(tmp_path, period_ms=None)
    browser.open(path)
    assert browser.message.visible and "odd" in browser.message.object and not browser.plot_area.objects
    assert cli_main(["export", str(path), "--out", str(tmp_path / "out"), "--format", "png"]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_results_files_with_external_storage_are_listed_with_an_error_and_not_opened(result, tmp_path, secret_file):
    path = tmp_path / "leak.nc"
    path.write_bytes(netcdf_bytes(result))
    with h5py.File(path, "a") as f:
        f.create_dataset("leak", shape=(64,), dtype="u1", external=[(str(secret_file), 0, 64)])
    (info,) = list_runs(tmp_path)
    assert "external files" in info.error and SECRET not in info.error
    with pytest.raises(NotARunError, match="external files"):
        load_run(path)
