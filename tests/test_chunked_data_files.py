"""NetCDF and CSV problem.data files of any size: read in chunks (NetCDF: slices of the events; CSV: blocks of lines),
bounded by limits.events instead of bytes, every hostile-file check kept and naming the event or line deep in the
file; uploads keep their byte caps. Chunks are made small by monkeypatching, so the files stay small."""

from __future__ import annotations

import re
import time
import tracemalloc

import h5netcdf
import h5py
import numpy as np
import pandas  # noqa: F401 (imported before tracemalloc starts: the CSV reader's parser)
import pytest

from qcf_studio.engine.data import csvfiles, netcdffiles
from qcf_studio.engine.data.datafiles import DataFileError, read_measured, read_measured_file
from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.problem_catalog import problem_info
from qcf_studio.engine.problems import get_problem

P = get_problem("proxy1d")
NAMES = P.observable_names


@pytest.fixture(scope="module")
def data() -> MeasuredData:
    """Weighted proxy1d events, 3000 and 2500 per observable."""
    d = make_pseudo_data(P, np.asarray(P.truth), 3000, seed=5)
    w = np.random.default_rng(1).uniform(0.5, 1.5, size=d.events.shape[:2])
    return MeasuredData.from_observables(
        "proxy1d", [d.events[0], d.events[1, :2500]], d.xsec, d.xsec_err, [w[0], w[1, :2500]]
    )


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(netcdffiles, "EVENT_SLICE", 1000)
    monkeypatch.setattr(csvfiles, "BLOCK_BYTES", 4096)


def _xsec_line(d: MeasuredData) -> str:
    return "# xsec: " + ", ".join(f"{n}={float(v)!r}±{float(e)!r}" for n, v, e in zip(NAMES, d.xsec, d.xsec_err))


def _csv_lines(d: MeasuredData, resolution: float | None = None) -> list[str]:
    """The CSV text of ``d``, events interleaved by observable; ``resolution`` as the last line."""
    lines = [_xsec_line(d), "observable,x,weight"]
    w = d.weights if d.weights is not None else np.ones(d.events.shape[:2])
    for i in range(d.events.shape[1]):
        lines += [
            f"{n},{float(d.events[o, i, 0])!r},{float(w[o, i])!r}" for o, n in enumerate(NAMES) if i < d.event_counts[o]
        ]
    return lines + ([f"# resolution: {resolution}"] if resolution is not None else [])


def _csv_line(lines: list[str], observable: str, k: int) -> int:
    """The line number of the ``k``-th event (from 0) of ``observable``."""
    hits = [i for i, line in enumerate(lines, start=1) if line.startswith(observable + ",")]
    return hits[k]


def test_netcdf_and_csv_problem_data_are_read_in_chunks_and_equal_the_data_written(
    data, small_chunks, tmp_path, monkeypatch
):
    monkeypatch.setattr(netcdffiles, "MAX_DATA_ARRAY_BYTES", 16 * 2**10)  # the events alone declare 3 times that
    nc = tmp_path / "d.nc"
    data.to_xarray().to_netcdf(nc, engine="h5netcdf")
    (tmp_path / "d.csv").write_text("\n".join(_csv_lines(data)) + "\n")
    for path in (nc, tmp_path / "d.csv"):
        back = read_measured_file(path, "proxy1d")
        assert back.counts.tolist() == [3000, 2500]
        np.testing.assert_array_equal(back.events, data.events)
        np.testing.assert_array_equal(back.weights, data.weights)
        np.testing.assert_array_equal(back.xsec, data.xsec)
    with pytest.raises(
        DataFileError, match="d.nc: its datasets declare more than 0 MiB"
    ):  # an upload keeps its byte limits
        read_measured("d.nc", nc.read_bytes(), "proxy1d", max_bytes=4 * 2**20)


def test_a_csv_resolution_after_the_events_widens_the_domain_and_a_deep_event_outside_is_named_by_line(
    data, small_chunks, tmp_path
):
    smeared = data.events.copy()
    b = problem_info("proxy1d").domain[0][1]
    smeared[1, 2400, 0] = b + 0.1 * abs(b)  # inside the domain widened by resolution 0.05, outside without it
    d = MeasuredData("proxy1d", smeared, data.xsec, data.xsec_err, None, data.weights, data.counts)
    lines = _csv_lines(d, resolution=0.05)
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(read_measured_file(tmp_path / "r.csv", "proxy1d").events, smeared)
    (tmp_path / "n.csv").write_text("\n".join(lines[:-1]) + "\n")
    at = _csv_line(lines, "sigma2", 2400)
    with pytest.raises(DataFileError, match=rf"n\.csv: 1 events of observable 'sigma2' .* first at line {at}: x"):
        read_measured_file(tmp_path / "n.csv", "proxy1d")


def _declared(path, n_obs: int, n_events: int, extra=None) -> None:
    """A NetCDF file whose events (and ``extra`` datasets) are declared, compressed and never written."""
    with h5netcdf.File(path, "w") as f:
        f.attrs["problem"] = "proxy1d"
        f.dimensions = {"observable": n_obs, "event": n_events}
        f.create_variable(
            "events", ("observable", "event"), float, chunks=(1, min(n_events, 2**16)), compression="gzip"
        )
        f.create_variable("xsec", ("observable",), data=np.ones(n_obs))
        f.create_variable("xsec_err", ("observable",), data=np.full(n_obs, 0.1))
        if extra:
            extra(f)


def test_more_events_than_limits_events_are_refused_from_the_declared_shape_or_the_first_block_past_it(
    data, small_chunks, tmp_path
):
    t = time.perf_counter()
    _declared(tmp_path / "huge.nc", 2, 10**9)  # 16 GB declared, a few kB on disk
    with pytest.raises(
        DataFileError,
        match=r"huge\.nc: /events? declares [\d,]+ values, more than the [\d,]+ that limits\.events allows \(5,000",
    ):
        read_measured_file(tmp_path / "huge.nc", "proxy1d")
    _declared(tmp_path / "wide.nc", 100, 1000)
    with pytest.raises(DataFileError, match=r"wide\.nc: variable 'events' has shape \(100, 1000\)"):
        read_measured_file(tmp_path / "wide.nc", "proxy1d")
    with h5py.File(tmp_path / "huge.nc", "a") as f:
        f["copy"] = f["events"]  # the events under a second name count as any dataset
    with pytest.raises(DataFileError, match=r"huge\.nc: its datasets declare more than 1,024 MiB .*at /copy"):
        read_measured_file(tmp_path / "huge.nc", "proxy1d", max_events=10**9)
    assert time.perf_counter() - t < 5  # refused from the declarations: 16 GB were never read
    lines = _csv_lines(data)
    (tmp_path / "many.csv").write_bytes(("\n".join(lines) + "\n").encode() + b"\xff" * 100)  # past the limit: unread
    at = _csv_line(lines, "sigma1", 1000)
    with pytest.raises(DataFileError, match=rf"many\.csv: observable 'sigma1' has more than 1,000 events.* line {at};"):
        read_measured_file(tmp_path / "many.csv", "proxy1d", max_events=1000)


def test_hostile_values_deep_in_a_later_chunk_are_named_by_event_or_line(data, small_chunks, tmp_path, monkeypatch):
    ds = data.to_xarray()
    ds["events"][1, 2345] = np.nan
    ds.to_netcdf(tmp_path / "nan.nc", engine="h5netcdf")
    with pytest.raises(DataFileError, match=r"nan\.nc: variable 'events' of observable 'sigma2': event 2345 is not"):
        read_measured_file(tmp_path / "nan.nc", "proxy1d")
    lines = _csv_lines(data)
    at = _csv_line(lines, "sigma2", 2345)
    for name, bad, message in [
        ("nan.csv", "sigma2,nan,1.0", rf"line {at}, column 'x': 'nan' is not a finite number"),
        ("latin.csv", "sigma2,0.5,1.0 \udce9", rf"not UTF-8 text \(line {at}, byte \d+\)"),
        ("long.csv", "sigma2,0.5," + "1" * 20_000, rf"line {at} is longer than"),
    ]:
        text = "\n".join([*lines[: at - 1], bad, *lines[at:]]) + "\n"
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))  # latin.csv: a byte 0xE9
        monkeypatch.setattr(csvfiles, "MAX_LINE_BYTES", 10_000)
        with pytest.raises(DataFileError, match=re.escape(name) + ": .*" + message):
            read_measured_file(tmp_path / name, "proxy1d")


def test_a_quoted_field_continued_on_the_next_line_is_refused_by_its_line(data, small_chunks, tmp_path):
    """The csv module would join ``"sig`` and ``ma2",0.5,1.0`` into one event of sigma2 and count lines wrongly after
    it; one event per line is the format."""
    lines = _csv_lines(data)
    at = _csv_line(lines, "sigma2", 2345)
    text = "\n".join([*lines[: at - 1], '"sig', 'ma2",0.5,1.0', *lines[at + 1 :]]) + "\n"
    (tmp_path / "quote.csv").write_text(text)
    with pytest.raises(DataFileError, match=rf"quote\.csv: line {at}: a quoted field does not end on its line"):
        read_measured_file(tmp_path / "quote.csv", "proxy1d")
    fine = "\n".join([*lines[: at - 1], '"sigma2",0.5,"1.0"', *lines[at:]]) + "\n"  # quotes on one line are CSV
    (tmp_path / "quoted.csv").write_text(fine)
    assert read_measured_file(tmp_path / "quoted.csv", "proxy1d").event_counts[1] == 2500


def test_unrelated_netcdf_datasets_are_refused_over_1_gib_declared_or_left_unread(data, tmp_path):
    path = tmp_path / "junk.nc"
    data.to_xarray().to_netcdf(path, engine="h5netcdf")
    with h5py.File(path, "a") as f:
        f.create_dataset("junk", shape=(2**28 + 1,), dtype="f8", chunks=(2**16,), compression="gzip")  # 2 GiB
    with pytest.raises(DataFileError, match=r"junk\.nc: its datasets declare more than 1,024 MiB .*at /junk"):
        read_measured_file(path, "proxy1d")
    path = tmp_path / "truth.nc"
    data.to_xarray().to_netcdf(path, engine="h5netcdf")
    with h5netcdf.File(path, "a") as f:
        f.dimensions["many"] = (
            5 * 10**7
        )  # 400 MB of parameters declared (and 400 MB of dimension scale): not this problem's, never read
        f.create_variable("params_true", ("many",), float, chunks=(2**16,), compression="gzip")
    t = time.perf_counter()
    back = read_measured_file(path, "proxy1d")
    assert back.truth is None and time.perf_counter() - t < 3
    np.testing.assert_array_equal(back.events, data.events)


def test_a_csv_is_streamed_its_text_never_held_whole(tmp_path):
    d = make_pseudo_data(P, np.asarray(P.truth), 120_000, seed=7)
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write(_xsec_line(d) + "\nobservable,x,weight\n")
        for o, n in enumerate(NAMES):
            f.write("".join(f"{n},{x!r},1.0\n" for x in d.events[o, :, 0].tolist()))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        back = read_measured_file(path, "proxy1d")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(back.events, d.events)
    # The events and weights are held at most twice (the blocks' arrays while they are copied into one table); the
    # reader's own share beyond that is a few blocks, a small part of the text (the text whole is more than its size)
    values = back.events.nbytes + back.weights.nbytes
    assert size > 6 * 2**20 and peak - 2 * values < 0.3 * size, (size, peak, values)
