"""Measured events from ROOT TTrees (uproot) and Parquet files (pyarrow), unequal event counts per observable, and
negative weights (sWeights): real files written in tmp_path, read as a spec's problem.data or an upload, fitted by
maximum likelihood; hostile files refused naming the file and the column."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import uproot
import yaml

import qcf_studio.engine.data.parquetfiles  # noqa: F401 (read as engine.data.parquetfiles)
import qcf_studio.engine.data.rootfiles  # noqa: F401 (read as engine.data.rootfiles)
from qcf_studio import engine
from qcf_studio.app.cli.commands import main as cli_main
from qcf_studio.app.dashboard.upload import read_measured_upload
from qcf_studio.engine.data.datafiles import DataFileError, read_measured_file, read_spec_data
from qcf_studio.engine.data.histograms import data_counts, data_edges
from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.mle import MLEFit
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.run.runner import make_trainer
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import SpecError, parse_spec
from qcf_studio.engine.spec_data import DataColumns

P = get_problem("proxy1d")
TRUTH = np.asarray(P.truth)


def _xsec_text(data: MeasuredData) -> str:
    return ", ".join(f"{n}={float(v)!r}±{float(e)!r}" for n, v, e in zip(P.observable_names, data.xsec, data.xsec_err))


def _spec(data: str, method: str = "mle", **problem):
    training = {"method": method, "steps": 4, "batch_params": 8, "events_per_param": 8, "snapshot_every": 4}
    return parse_spec(
        {
            "name": "data-in",
            "problem": {"kind": "proxy1d", "data": data, **problem},
            "training": training,
            "ensemble": {"members": 1},
        }
    )


def _closure(spec) -> tuple[MLEFit, np.ndarray]:
    """The likelihood fit of the spec's data: the fit and the pulls against proxy1d's truth."""
    data = read_spec_data(spec)
    fit = make_trainer(spec, data, 0, "mle")
    assert isinstance(fit, MLEFit)
    fit.simulated_events, fit.qcf_draws = (20_000, 20_000), (200, 200)
    result = fit.fit(0, HistorySink())
    assert result.status == "completed" and not fit.warnings and result.fit_valid
    assert np.isfinite(result.chi2_ndf).all() and np.all(result.chi2_ndf < 3)
    return fit, (result.params_pred - TRUTH) / result.params_pred_std


@pytest.fixture(scope="module")
def pseudo() -> MeasuredData:
    return make_pseudo_data(P, TRUTH, 20_000, seed=11)


def _write_root(path, trees: dict[str, dict[str, np.ndarray]], strings: dict[str, str] | None = None) -> None:
    with uproot.recreate(path) as f:
        for name, branches in trees.items():
            f.mktree(name, {b: v.dtype for b, v in branches.items()}).extend(branches)
        for name, text in (strings or {}).items():
            f[name] = text


def test_root_trees_named_in_the_spec_with_unequal_counts_fit_and_close_on_proxy1d(pseudo, tmp_path, monkeypatch):
    path = tmp_path / "measured:run1.root"  # a colon: uproot must not read it as "file:tree"
    x1, x2 = pseudo.events[0, :, 0], pseudo.events[1, :12_000, 0]  # 20 000 and 12 000 events
    _write_root(path, {"proton": {"xB": x1, "sw": np.ones_like(x1)}, "neutron": {"xB": x2.astype(np.float32)}})
    columns = {"sigma1": {"tree": "proton", "x": "xB", "weight": "sw"}, "sigma2": {"tree": "neutron", "x": "xB"}}
    xsec = {n: [float(v), float(e)] for n, v, e in zip(P.observable_names, pseudo.xsec, pseudo.xsec_err)}
    spec = _spec(str(path), columns=columns, xsec=xsec)
    data = read_spec_data(spec)
    monkeypatch.setattr(engine.data.rootfiles, "_STEP", 3000)  # chunks that split the baskets
    np.testing.assert_array_equal(read_spec_data(spec).events, data.events)
    assert data.event_counts.tolist() == [20_000, 12_000] and data.normalised_weights() is None
    np.testing.assert_array_equal(data.events[1, :12_000, 0], x2.astype(np.float32))
    fit, pulls = _closure(spec)
    assert fit.n_measured == 32_000 and np.all(np.abs(pulls) < 3), pulls


def test_a_parquet_table_in_the_csv_schema_fits_and_closes_read_row_group_by_row_group(pseudo, tmp_path, monkeypatch):
    path = tmp_path / "measured.parquet"
    n2 = 15_000
    table = pa.table(
        {
            "observable": pa.array(["sigma1"] * 20_000 + ["sigma2"] * n2).dictionary_encode(),
            "x": np.concatenate([pseudo.events[0, :, 0], pseudo.events[1, :n2, 0]]),
        }
    ).replace_schema_metadata({"xsec": _xsec_text(pseudo)})
    pq.write_table(table, path, row_group_size=4096)
    whole = read_measured_file(path, "proxy1d")
    monkeypatch.setattr(engine.data.parquetfiles, "_BATCH_ROWS", 1000)  # chunks that split the observables' rows
    chunked = read_measured_file(path, "proxy1d")
    assert chunked.event_counts.tolist() == [20_000, n2]
    np.testing.assert_array_equal(chunked.events, whole.events)
    np.testing.assert_allclose(chunked.xsec, pseudo.xsec, rtol=1e-15)
    _, pulls = _closure(_spec(str(path)))
    assert np.all(np.abs(pulls) < 3), pulls


def _subtracted(seed: int, n: int = 20_000, m: int = 5_000) -> tuple[list[np.ndarray], list[np.ndarray], MeasuredData]:
    """Signal events of proxy1d plus a background sample (weight +1) and a second one subtracting it (weight −1):
    an unbiased weighted sample of the signal with negative weights, as sWeights or side-band subtraction give."""
    rng = np.random.default_rng(seed)
    signal = make_pseudo_data(P, TRUTH, n, seed=seed)
    events, weights = [], []
    for o in range(2):
        b = 0.1 + 0.9 * rng.beta(1.0, 3.0, (2, m))  # a falling background on proxy1d's [0.1, 1]
        events.append(np.concatenate([signal.events[o, :, 0], b[0], b[1]]))
        weights.append(np.concatenate([np.ones(n), np.ones(m), -np.ones(m)]))
    return events, weights, signal


def test_negative_weights_fit_by_maximum_likelihood_with_sandwich_errors_and_close(tmp_path):
    events, weights, signal = _subtracted(seed=21)
    path = tmp_path / "sweighted.root"
    trees = {n: {"x": e, "weight": w} for n, e, w in zip(P.observable_names, events, weights)}
    _write_root(path, trees, {"xsec": _xsec_text(signal)})
    spec = _spec(str(path))
    fit, pulls = _closure(spec)
    assert np.all(np.abs(pulls) < 3), pulls
    data = read_spec_data(spec)
    assert data.negative_weights and (data.weights < 0).sum() == 10_000
    # The sandwich H⁻¹ V H⁻¹ counts the subtracted background's fluctuations: larger than the signal-only errors.
    plain = MLEFit(P, signal, TrainingConfig(), seed=0)
    plain.simulated_events, plain.qcf_draws = (2000, 2000), (50, 50)
    signal_only = plain.fit(0, HistorySink()).params_pred_std
    ratio = np.sqrt(np.diag(fit.cov.numpy())) / signal_only
    assert np.all(ratio > 1.05) and np.all(ratio < 4), ratio
    # χ² of the weighted data histograms uses Σw² variances (larger than the net counts where events cancel).
    counts, sumw2 = data_counts(data, data_edges(data))
    assert sumw2 is not None and np.all(sumw2 >= np.abs(counts)) and np.any(sumw2 > counts + 1)


def test_negative_weights_are_refused_for_the_gan_before_anything_is_dispatched(tmp_path, capsys):
    events, weights, signal = _subtracted(seed=22, n=2000, m=500)
    path = tmp_path / "sw.parquet"
    table = pa.table(
        {
            "observable": np.repeat(P.observable_names, [len(e) for e in events]),
            "x": np.concatenate(events),
            "weight": np.concatenate(weights),
        }
    ).replace_schema_metadata({"xsec": _xsec_text(signal)})
    pq.write_table(table, path)
    spec_file = tmp_path / "gan.yaml"
    spec_file.write_text(_spec(str(path), method="gan").to_yaml())
    assert cli_main(["validate", str(spec_file)]) == 2
    message = capsys.readouterr().err
    for text in ("training.method", "gan cannot use negative event weights", "sw.parquet", "500 of 3,000 events"):
        assert text in message, message
    assert cli_main(["run", str(spec_file), "--out", str(tmp_path / "runs")]) == 2  # before any cluster starts
    assert "training.method" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="GAN cannot use negative event weights"):
        GANTrainer(P, read_spec_data(_spec(str(path))), TrainingConfig(steps=2))
    (tmp_path / "mle.yaml").write_text(_spec(str(path)).to_yaml())
    assert cli_main(["validate", str(tmp_path / "mle.yaml")]) == 0  # the likelihood fit takes them
    assert "3,000 events/observable, weighted (negative weights)" in capsys.readouterr().out


def test_unequal_counts_train_gan_steps_each_observable_drawing_from_its_own_events(pseudo):
    events = [pseudo.events[0, :5000], pseudo.events[1, :1200]]
    data = MeasuredData.from_observables("proxy1d", events, pseudo.xsec, pseudo.xsec_err)
    assert data.event_counts.tolist() == [5000, 1200] and (data.events[1, 1200:] == events[1][0]).all()
    config = TrainingConfig(steps=3, batch_params=16, events_per_param=64, disc_edge_features=False)
    gan = GANTrainer(P, data, config, seed=3)
    assert gan.real_counts is not None and gan.real_counts.tolist() == [5000, 1200]
    feats = gan.discriminator.event_features(torch.as_tensor(events[1][:, :], dtype=torch.float32))
    torch.testing.assert_close(gan.discriminator.loc[1], feats.mean(0))  # z-scored on the 1 200 events, no padding
    metrics = [gan.train_step() for _ in range(3)]
    assert all(np.isfinite(m["loss_d"]) for m in metrics)
    # sigma2's batch comes from its 1 200 events: its first event (which the 3 800 padding rows repeat) is drawn
    # about once per 1 024 rows, not three times in four.
    features, _ = gan._real_batch()
    rows = features.reshape(2, 1024, -1)[1]
    assert int((rows == gan.real_features[1, 0]).all(-1).sum()) < 10
    rank = GANTrainer(P, data, config, seed=3, shard=(1, 3))  # a data-parallel rank: its share of each observable
    assert rank.real_counts.tolist() == [1667, 400]
    result = MLEFit(P, data, TrainingConfig(), seed=1)
    assert result.valid is not None and int(result.counts.sum()) == 6200


def test_unequal_counts_round_trip_through_netcdf_and_csv(pseudo, tmp_path):
    data = MeasuredData.from_observables(
        "proxy1d", [pseudo.events[0, :300], pseudo.events[1, :150]], pseudo.xsec, pseudo.xsec_err
    )
    ds = data.to_xarray()
    assert np.isnan(ds["events"].values[1, 150:]).all() and ds["counts"].values.tolist() == [300, 150]
    ds.to_netcdf(tmp_path / "u.nc", engine="h5netcdf")
    back = read_measured_file(tmp_path / "u.nc", "proxy1d")
    assert back.event_counts.tolist() == [300, 150]
    np.testing.assert_array_equal(back.events, data.events)
    lines = ["# xsec: " + _xsec_text(pseudo), "observable,x"]
    lines += [
        f"{n},{float(x)!r}" for o, n in enumerate(P.observable_names) for x in data.events[o, : data.event_counts[o], 0]
    ]
    csv = read_measured_upload("u.csv", ("\n".join(lines) + "\n").encode(), "proxy1d")
    np.testing.assert_array_equal(csv.events, data.events)


def _hostile_root(tmp_path, pseudo) -> list[tuple[str, dict, list[str], str | None]]:
    """(file name, spec problem fields, texts the message must hold, the field named) of refused ROOT files."""
    x = pseudo.events[0, :2000, 0]
    good = {"sigma1": {"x": x}, "sigma2": {"x": x}}
    xs = {"xsec": _xsec_text(pseudo)}
    cases = []
    _write_root(tmp_path / "good.root", good, xs)
    content = (tmp_path / "good.root").read_bytes()
    (tmp_path / "truncated.root").write_bytes(content[: len(content) // 2])
    cases.append(("truncated.root", {}, ["truncated.root", "cannot be read", "damaged or truncated"], "problem.data"))
    branch = uproot.open(tmp_path / "good.root")["sigma1"]["x"]
    seek = int(branch.member("fBasketSeek")[0])
    damaged = bytearray(content)
    damaged[seek + 100 : seek + 400] = b"\xff" * 300  # a basket's compressed bytes overwritten
    (tmp_path / "damaged.root").write_bytes(bytes(damaged))
    cases.append(("damaged.root", {}, ["damaged.root", "tree 'sigma1', branch 'x'", "cannot be read"], "problem.data"))
    bomb = bytearray(content)
    bomb[seek + 6 : seek + 10] = (2**31 - 1).to_bytes(4, "big")  # the basket's TKey claims 2 GiB uncompressed
    (tmp_path / "bomb.root").write_bytes(bytes(bomb))
    cases.append(("bomb.root", {}, ["bomb.root", "branch 'x'", "basket 0 declares 2,147,483,647 bytes"], None))
    cols = {"sigma1": {"tree": "sigma1", "x": "xB"}, "sigma2": {}}
    cases.append(("good.root", {"columns": cols}, ["good.root", "tree 'sigma1'", "no branch 'xB'"], "x"))
    cols = {"sigma1": {"tree": "events"}, "sigma2": {}}
    cases.append(("good.root", {"columns": cols}, ["good.root", "no tree 'events'", "trees: sigma1, sigma2"], "tree"))
    nan = x.copy()
    nan[17] = np.nan
    _write_root(tmp_path / "nan.root", {"sigma1": {"x": x}, "sigma2": {"x": nan}}, xs)
    expected = ["nan.root", "tree 'sigma2', branch 'x' of observable 'sigma2', entry 17", "not a finite"]
    cases.append(("nan.root", {}, expected, None))
    with uproot.recreate(tmp_path / "jagged.root") as f:
        f.mktree("sigma1", {"x": "var * float64"}).extend({"x": ak.Array([[0.5]] * 200)})
        f.mktree("sigma2", {"x": np.float64}).extend({"x": x})
        f["xsec"] = xs["xsec"]
    cases.append(("jagged.root", {}, ["jagged.root", "branch 'x'", "not one number per entry"], None))
    with uproot.recreate(tmp_path / "rntuple.root") as f:
        f["sigma1"] = {"x": x}  # uproot's default for a mapping: an RNTuple
        f.mktree("sigma2", {"x": np.float64}).extend({"x": x})
    cases.append(("rntuple.root", {}, ["rntuple.root", "RNTuple, not a TTree", "mktree"], None))
    cases.append(("good.root", {"limits_events": 1000}, ["good.root", "2,000 entries", "limits.events"], None))
    return cases


def test_hostile_root_files_are_refused_naming_the_file_tree_and_branch(pseudo, tmp_path, capsys):
    for name, fields, expected, field in _hostile_root(tmp_path, pseudo):
        limit = fields.pop("limits_events", None)
        spec = _spec(str(tmp_path / name), **fields)
        if limit is not None:
            spec.limits.events = limit
        with pytest.raises(SpecError) as err:
            read_spec_data(spec)
        for text in expected:
            assert text in str(err.value), (name, str(err.value))
        if field is not None:
            assert err.value.field.endswith(field), (name, err.value.field)
    spec_file = tmp_path / "wrong-branch.yaml"
    cols = {"sigma1": {"tree": "sigma1", "x": "xB"}, "sigma2": {}}
    spec_file.write_text(_spec(str(tmp_path / "good.root"), columns=cols).to_yaml())
    assert cli_main(["validate", str(spec_file)]) == 2
    assert "problem.columns.sigma1.x: " in capsys.readouterr().err


def _parquet(tmp_path, name: str, columns: dict, metadata: dict | None = None) -> None:
    pq.write_table(pa.table(columns).replace_schema_metadata(metadata), tmp_path / name)


def test_hostile_parquet_files_are_refused_naming_the_file_and_the_column(pseudo, tmp_path):
    x = pseudo.events[0, :400, 0]
    obs = ["sigma1", "sigma2"] * 200
    meta = {"xsec": _xsec_text(pseudo)}
    nan = x.copy()
    nan[33] = np.nan
    _parquet(tmp_path, "nan.parquet", {"observable": obs, "x": nan}, meta)
    _parquet(tmp_path, "text.parquet", {"observable": obs, "x": [str(v) for v in x]}, meta)
    _parquet(tmp_path, "typo.parquet", {"observable": obs, "x": x, "weigth": np.ones(400)}, meta)
    _parquet(tmp_path, "obs.parquet", {"observable": obs[:-1] + ["sigma3"], "x": x}, meta)
    _parquet(tmp_path, "noxs.parquet", {"observable": obs, "x": x})
    _parquet(tmp_path, "nulls.parquet", {"observable": obs, "x": pa.array([*x[:-1], None])}, meta)
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "nan.parquet").read_bytes()[:300])
    cases = [
        ("nan.parquet", {}, ["nan.parquet", "column 'x' of observable 'sigma2', row 33", "not a finite number"]),
        ("text.parquet", {}, ["text.parquet", "column 'x' holds text, not numbers"]),
        ("typo.parquet", {}, ["typo.parquet", "unknown column 'weigth'"]),
        ("obs.parquet", {}, ["obs.parquet", "column 'observable', row 399", "unknown observable 'sigma3'"]),
        ("noxs.parquet", {}, ["noxs.parquet", "no cross sections", "problem.xsec"]),
        ("nulls.parquet", {}, ["nulls.parquet", "column 'x'", "row 399", "missing values"]),
        ("cut.parquet", {}, ["cut.parquet", "not a readable Parquet file"]),
        ("nan.parquet", {"columns": {"sigma1": {"x": "x1"}, "sigma2": {}}}, ["nan.parquet", "no column 'x1'"]),
        ("nan.parquet", {"columns": {"sigma1": {"tree": "t"}, "sigma2": {}}}, ["nan.parquet", "no trees"]),
    ]
    for name, fields, expected in cases:
        with pytest.raises(SpecError) as err:
            read_spec_data(_spec(str(tmp_path / name), **fields))
        for text in expected:
            assert text in str(err.value), (name, str(err.value))


def test_uploads_take_parquet_and_root_with_the_spec_columns_and_keep_the_50_mib_cap(pseudo, tmp_path):
    x = pseudo.events[0, :500, 0]
    _write_root(tmp_path / "u.root", {"t": {"a": x, "b": x}}, {"xsec": _xsec_text(pseudo)})
    columns = {"sigma1": DataColumns("t", "a"), "sigma2": DataColumns("t", "b")}
    content = (tmp_path / "u.root").read_bytes()
    data = read_measured_upload("u.root", content, "proxy1d", columns=columns)
    assert data.event_counts.tolist() == [500, 500]
    with pytest.raises(DataFileError, match="u.root: the file has .* more than the upload limit"):
        read_measured_upload("u.root", content, "proxy1d", max_bytes=len(content) - 1, columns=columns)
    with pytest.raises(DataFileError, match="u.root: no tree 'sigma1' for observable 'sigma1'.*trees: t"):
        read_measured_upload("u.root", content, "proxy1d")
    nc = data.to_xarray()
    nc.to_netcdf(tmp_path / "d.nc", engine="h5netcdf")
    with pytest.raises(DataFileError, match="d.nc is a NetCDF file: its columns are fixed") as err:
        read_measured_file(tmp_path / "d.nc", "proxy1d", columns=columns)
    assert err.value.field == "problem.columns"


def test_reading_root_or_parquet_without_the_io_extra_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "a.root").write_bytes(b"root" + b"\0" * 100)
    (tmp_path / "a.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    for module, name in (("uproot", "a.root"), ("pyarrow", "a.parquet")):
        monkeypatch.setitem(__import__("sys").modules, module, None)  # as if not installed: import fails
        with pytest.raises(
            DataFileError, match=rf"{name}: reading .* files needs the package {module}: install qcf-studio\[io\]"
        ):
            read_measured_file(tmp_path / name, "proxy1d")


def test_the_dashboard_reads_a_root_upload_by_the_forms_columns_and_refuses_its_negative_weights_for_the_gan(tmp_path):
    from qcf_studio.app.dashboard.page import Dashboard
    from qcf_studio.app.dashboard.runs import RunManager

    events, weights, signal = _subtracted(seed=23, n=1000, m=200)
    trees = {"t": {"a": events[0], "wa": weights[0]}, "u": {"b": events[1], "wb": weights[1]}}
    _write_root(tmp_path / "sw.root", trees, {"xsec": _xsec_text(signal)})
    columns = {"sigma1": {"tree": "t", "x": "a", "weight": "wa"}, "sigma2": {"tree": "u", "x": "b", "weight": "wb"}}
    raw = _spec("x.root", method="gan", columns=columns).to_dict()
    raw["problem"]["data"] = None  # the columns are typed before there is a file: that spec is not valid yet
    dash = Dashboard(RunManager(None, tmp_path / "runs", tmp_path), yaml.safe_dump(raw, sort_keys=False))
    assert dash.spec is None and "problem.columns" in dash.message.object
    dash.data_file.filename = "sw.root"
    dash.data_file.value = (tmp_path / "sw.root").read_bytes()
    text = dash.editor.value
    assert "uploads/sw.nc" in text and "columns: null" in text  # saved as NetCDF: the columns have done their job
    assert "1,400 weighted events per observable (negative weights" in dash.data_note.object
    assert dash.spec is None and "training.method" in dash.message.object and "gan cannot use" in dash.message.object
    dash._on_form_edit("training", "method", "mle")
    assert dash.spec is not None and dash.spec.training.method == "mle"
    dash.dispose()
