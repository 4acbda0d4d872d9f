"""`qcf-studio export --format hepdata|grid`: a run as a HEPData submission (checked with hepdata-validator) and as
a replica grid (NetCDF and LHAPDF6 text files, read back here by a small reader of their own)."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from hepdata_validator.full_submission_validator import FullSubmissionValidator

import qcf_studio
from qcf_studio.app.cli.commands import main
from qcf_studio.app.export import hepdata as hepdata_module
from qcf_studio.app.export.grid import Q_KNOTS, export_grid
from qcf_studio.app.export.hepdata import export_hepdata
from qcf_studio.engine.results import build_results, estimate
from qcf_studio.engine.results.files import write_netcdf_atomic
from qcf_studio.engine.run.runner import measured_data
from tests.run_files import _train, copy_to, open_results, run_spec


@pytest.fixture(scope="module")
def gauss6(tmp_path_factory) -> Path:
    """A gauss6 likelihood fit (about 2 s): the one problem the shared ``runs`` fixture leaves out."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = run_spec("gauss6", "mle")
        data = measured_data(spec)
        ds = build_results(spec, data, _train(spec, data), 1.0)
    finally:
        torch.set_num_threads(threads)
    return write_netcdf_atomic(ds, tmp_path_factory.mktemp("gauss6") / "gauss6-mle.nc")


def _run(runs: dict[str, Path], gauss6: Path, key: str) -> Path:
    return gauss6 if key == "gauss6" else runs[key]


def _valid(directory: Path) -> None:
    validator = FullSubmissionValidator()
    valid = validator.validate(directory=str(directory))
    assert valid, {f: [m.message for m in ms] for f, ms in validator.get_messages().items()}


@pytest.mark.parametrize("key", ["gan", "mle", "gauss6", "proxy2d", "multiset2d"])
def test_the_hepdata_submission_of_every_problem_validates_with_a_table_per_qcf(runs, gauss6, key, tmp_path):
    path = _run(runs, gauss6, key)
    ds = open_results(path)
    two_d = "y" in ds["qcf_pred"].dims
    # (the export validates 1D submissions itself; 2D ones, 3721 points a QCF, are validated once, here)
    folder, archive = export_hepdata(path, tmp_path, validate=not two_d)
    assert (folder.name, archive.name) == (f"{path.stem}-hepdata", f"{path.stem}-hepdata.tar.gz")
    _valid(folder)
    with tarfile.open(archive) as tar:  # the same files, for HEPData's upload
        assert sorted(tar.getnames()) == sorted(p.name for p in folder.iterdir())
    if not two_d:
        assert FullSubmissionValidator().validate(archive=str(archive))
    docs = list(yaml.safe_load_all((folder / "submission.yaml").read_text()))
    tables = [d for d in docs[1:] if d]
    assert [t["name"] for t in tables] == [f"QCF {q}" for q in ds["qcf"].values] + ["Parameters"]
    for q in ds["qcf"].values:
        table = _load(folder / f"qcf_{str(q).lower()}.yaml")
        assert [v["header"]["name"] for v in table["independent_variables"]] == (["x", "y"] if two_d else ["x"])
        assert len(table["independent_variables"][0]["values"]) == ds["qcf_pred"].isel(member=0, qcf=0).size
        names = [v["header"]["name"] for v in table["dependent_variables"]]
        args = "x, y" if two_d else "x"
        assert names == [f"{q}({args})", f"{q}({args}) truth"]
    assert (folder / f"{path.stem}-spec.yaml").read_text() == ds.attrs["spec"]
    assert not list(tmp_path.glob(".*"))  # no staging left


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _values(variable: dict) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Values, symmetric errors (0 where hepdata_lib leaves a zero error out) and their labels."""
    values = np.array([v["value"] for v in variable["values"]], dtype=float)
    errors = np.array([v["errors"][0]["symerror"] if "errors" in v else 0.0 for v in variable["values"]])
    labels = {v["errors"][0]["label"] for v in variable["values"] if "errors" in v}
    return values, errors, labels


def test_hepdata_tables_hold_the_runs_estimates_with_labelled_errors_truth_and_provenance(runs, tmp_path):
    ds = open_results(runs["gan"])
    folder, _ = qcf_studio.export(runs["gan"], tmp_path, format="hepdata")
    mean, err = estimate(ds, "qcf")
    table = _load(folder / "qcf_u.yaml")
    x = [v["value"] for v in table["independent_variables"][0]["values"]]
    np.testing.assert_allclose(x, ds["x"].values, rtol=1e-4)
    value, error, labels = _values(table["dependent_variables"][0])
    np.testing.assert_allclose(value, mean.sel(qcf="u").values, rtol=1e-4)  # 5 significant digits
    np.testing.assert_allclose(error, err.sel(qcf="u").values, rtol=1e-4)
    assert labels == {"ensemble 1 sigma (2 members)"}
    qualifiers = {q["name"]: q["value"] for q in table["dependent_variables"][0]["qualifiers"]}
    assert qualifiers == {"problem": "proxy1d", "method": "gan", "members": 2, "run": "proxy1d-gan"}

    params = _load(folder / "parameters.yaml")
    assert [v["value"] for v in params["independent_variables"][0]["values"]] == list(ds["param"].values)
    deps = {v["header"]["name"]: v for v in params["dependent_variables"]}
    assert list(deps) == ["estimate", "truth", "pull", "maximum-likelihood reference"]
    assert [v["value"] for v in deps["truth"]["values"]] == list(ds["params_true"].values)  # exact: 1.09375
    p_mean, p_err = estimate(ds, "params")
    value, error, _ = _values(deps["estimate"])
    np.testing.assert_allclose(value, p_mean.values, rtol=1e-4)
    np.testing.assert_allclose(error, p_err.values, rtol=1e-4)
    assert _values(deps["maximum-likelihood reference"])[2] == {"Hessian 1 sigma (HESSE)"}

    head = next(yaml.safe_load_all((folder / "submission.yaml").read_text()))
    assert "problem proxy1d, method gan, run 'proxy1d-gan'" in head["comment"]
    assert "closure" in head["comment"] and "torch" in head["comment"]
    spec = f"{runs['gan'].stem}-spec.yaml"
    assert spec in [r["location"] for r in head["additional_resources"]]
    assert (folder / spec).read_text() == ds.attrs["spec"]


def test_a_likelihood_fit_labels_its_errors_as_hessian(runs, tmp_path):
    folder, _ = export_hepdata(runs["mle"], tmp_path)
    table = _load(folder / "qcf_d.yaml")
    assert _values(table["dependent_variables"][0])[2] == {"Hessian 1 sigma (HESSE)"}


def test_a_run_whose_members_all_failed_exports_blanks_that_validate(runs, tmp_path):
    def failed(ds: xr.Dataset) -> xr.Dataset:
        ds["qcf_pred"][:] = np.nan
        ds["params_pred"][:] = np.nan
        ds.attrs["status"] = "failed"
        return ds

    folder, _ = export_hepdata(copy_to(runs["mle"], tmp_path / "failed.nc", failed), tmp_path / "out")
    table = _load(folder / "qcf_u.yaml")
    assert {v["value"] for v in table["dependent_variables"][0]["values"]} == {"-"}  # HEPData's blank
    assert {q["value"] for q in table["dependent_variables"][0]["qualifiers"] if q["name"] == "members"} == {0}


def test_without_hepdata_lib_export_says_to_install_the_io_extra(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hepdata_lib", None)  # import hepdata_lib raises ImportError
    assert main(["export", str(runs["gan"]), "--format", "png,hepdata", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "hepdata_lib" in err and "qcf-studio[io]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # checked before anything, the figures included


def test_a_submission_that_fails_validation_leaves_nothing_behind(runs, tmp_path, monkeypatch):
    (tmp_path / "kept.txt").write_text("mine")
    monkeypatch.setattr(hepdata_module, "validation_errors", lambda directory: ["qcf_u.yaml: broken"])
    with pytest.raises(ValueError, match="does not validate: qcf_u.yaml: broken"):
        export_hepdata(runs["gan"], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_exporting_again_replaces_the_folder_whole(runs, tmp_path):
    folder, _ = export_hepdata(runs["mle"], tmp_path)
    (folder / "stale.yaml").write_text("old")
    again, _ = export_hepdata(runs["mle"], tmp_path)
    assert again == folder and not (folder / "stale.yaml").exists()
    _valid(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, f"{folder.name}.tar.gz"]


def read_lhagrid1(path: Path) -> tuple[dict, np.ndarray, np.ndarray, list[int], np.ndarray]:
    """An LHAPDF6 ``.dat`` member with one subgrid: its header, x knots, Q knots, flavours and the values as
    (x, Q, flavour), the file's order being Q fastest, then x."""
    head, block, rest = path.read_text().split("---\n")
    assert rest == ""
    lines = block.strip("\n").split("\n")
    x, q = (np.array(line.split(), dtype=float) for line in lines[:2])
    pids = [int(p) for p in lines[2].split()]
    values = np.array([line.split() for line in lines[3:]], dtype=float).reshape(len(x), len(q), len(pids))
    return yaml.safe_load(head), x, q, pids, values


def test_the_grid_round_trips_and_its_lhapdf_files_parse_back_to_the_same_numbers(runs, tmp_path):
    ds = open_results(runs["gan"])
    nc, *sets = qcf_studio.export(runs["gan"], tmp_path, format="grid")
    stem = runs["gan"].stem  # proxy1d-gan-20261201-110000
    assert nc.name == f"{stem}-replicas.nc" and [s.name for s in sets] == [f"{stem}_u", f"{stem}_d"]
    with xr.open_dataset(nc, engine="h5netcdf") as f:
        grid = f.load()
    assert grid["qcf_replicas"].dims == ("replica", "qcf", "x")
    assert grid.attrs["replica_source"] == "draws" and grid.sizes["replica"] == 1 + 2 * 100  # 2 members × 100 draws
    np.testing.assert_array_equal(grid["x"], ds["x"])
    replicas = grid["qcf_replicas"].isel(replica=slice(1, None))
    np.testing.assert_allclose(grid["qcf_replicas"].isel(replica=0), replicas.mean("replica"), rtol=1e-12)
    xr.testing.assert_equal(grid["params_true"], ds["params_true"])
    for folder, qcf, pid in zip(sets, ("u", "d"), (2, 1)):
        info = yaml.safe_load((folder / f"{folder.name}.info").read_text())
        assert info["Format"] == "lhagrid1" and info["ErrorType"] == "replicas" and info["Flavors"] == [pid]
        assert info["NumMembers"] == grid.sizes["replica"] and info["QCFName"] == qcf
        members = sorted(folder.glob("*.dat"))
        assert len(members) == grid.sizes["replica"] and members[0].name == f"{folder.name}_0000.dat"
        for i in (0, 1, grid.sizes["replica"] - 1):
            head, x, q, pids, values = read_lhagrid1(members[i])
            assert head["PdfType"] == ("central" if i == 0 else "replica") and pids == [pid]
            assert list(q) == list(Q_KNOTS)
            np.testing.assert_array_equal(x, ds["x"].values)
            xq = grid["x"].values * grid["qcf_replicas"].sel(qcf=qcf).isel(replica=i).values  # x·q: LHAPDF's xf
            np.testing.assert_array_equal(values[:, 0, 0], xq)
            np.testing.assert_array_equal(values[:, 1, 0], xq)  # no scale dependence


def test_the_replicas_of_a_likelihood_fit_spread_as_its_error(runs, gauss6, tmp_path):
    for path in (runs["mle"], gauss6):
        ds = open_results(path)
        nc = export_grid(path, tmp_path)[0]
        with xr.open_dataset(nc, engine="h5netcdf") as f:
            spread = f["qcf_replicas"].isel(replica=slice(1, None)).std("replica").load()
        mean, err = estimate(ds, "qcf")
        judged = err > 1e-3 * float(abs(mean).max())
        ratio = float((spread / err).where(judged).median())
        assert 0.75 < ratio < 1.3, (path.name, ratio)  # 100 draws: ±10% at 1σ


def test_a_bootstrap_ensembles_replicas_are_its_members_whose_spread_is_the_hepdata_error(runs, tmp_path):
    def bootstrap(ds: xr.Dataset) -> xr.Dataset:  # the file's label is all the export reads of how it was made
        ds.attrs["uncertainty"] = "bootstrap"
        return ds

    path = copy_to(runs["gan"], tmp_path / "boot.nc", bootstrap)
    ds = open_results(path)
    nc = export_grid(path, tmp_path / "out")[0]
    with xr.open_dataset(nc, engine="h5netcdf") as f:
        grid = f.load()
    assert grid.attrs["replica_source"] == "members" and grid.sizes["replica"] == 3
    members = ds["qcf_pred"].values.astype(np.float64)
    widened = members.mean(0) + np.sqrt(1 + 1 / len(members)) * (members - members.mean(0))  # the error of their mean
    np.testing.assert_allclose(grid["qcf_replicas"].values[1:], widened, rtol=1e-12)
    mean, err = estimate(ds, "qcf")
    replicas = grid["qcf_replicas"].isel(replica=slice(1, None))
    # (a GAN's QCFs are stored as float32, the replicas as float64)
    np.testing.assert_allclose(replicas.std("replica", ddof=1), err, rtol=1e-6, atol=1e-20)
    np.testing.assert_allclose(grid["qcf_replicas"].isel(replica=0), mean, rtol=1e-6)


@pytest.mark.parametrize("key", ["proxy2d", "gauss6"])
def test_a_grid_without_lhapdf_sets_says_why(runs, gauss6, key, tmp_path):
    written = export_grid(_run(runs, gauss6, key), tmp_path)
    assert len(written) == 1 and not list(written[0].parent.glob("*/*.dat"))
    with xr.open_dataset(written[0], engine="h5netcdf") as grid:
        why = "2D" if key == "proxy2d" else "not within (0, 1]"
        assert why in grid.attrs["lhapdf"]
        spatial = ("x", "y") if key == "proxy2d" else ("x",)
        assert grid["qcf_replicas"].dims == ("replica", "qcf", *spatial)


def test_a_run_without_replicas_is_refused_naming_it_and_why(runs, tmp_path, capsys):
    no_draws = copy_to(runs["mle"], tmp_path / "no-draws.nc", lambda ds: ds.drop_vars("params_draws"))
    assert main(["export", str(no_draws), "--format", "grid", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no-draws.nc" in err and "params_draws" in err and "bootstrap" in err

    def one_member_bootstrap(ds: xr.Dataset) -> xr.Dataset:
        ds.attrs["uncertainty"] = "bootstrap"
        return ds

    single = copy_to(runs["proxy2d"], tmp_path / "single.nc", one_member_bootstrap)
    assert main(["export", str(single), "--format", "png,hepdata,grid", "--out", str(tmp_path / "out")]) == 2
    assert "single.nc: a bootstrap ensemble with 1 fitted member(s)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any format wrote


def test_cli_writes_both_and_prints_them_and_refuses_them_for_a_campaign_summary(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(runs["mle"]), "--format", "hepdata,grid", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    stem = runs["mle"].stem
    assert printed == [
        str(out / f"{stem}-hepdata"),
        str(out / f"{stem}-hepdata.tar.gz"),
        str(out / f"{stem}-grid" / f"{stem}-replicas.nc"),
        str(out / f"{stem}-grid" / "proxy1d-mle-20261201-100000_u"),
        str(out / f"{stem}-grid" / "proxy1d-mle-20261201-100000_d"),
    ]

    def summary(ds: xr.Dataset) -> xr.Dataset:
        ds.attrs["kind"] = "qcf-studio campaign"
        return ds

    fake = copy_to(runs["mle"], tmp_path / "summary.nc", summary)
    assert main(["export", str(fake), "--format", "grid", "--out", str(tmp_path / "c")]) == 2
    assert "campaign's summary" in capsys.readouterr().err
