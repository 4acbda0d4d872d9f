"""Measured events from NetCDF-4 files as ``qcf-studio data`` writes them (the layout is described in
:mod:`qcf_studio.engine.data.datafiles`), read slice by slice.

The file is opened through :mod:`qcf_studio.engine.data.safe_hdf5` (no external storage, links or virtual datasets;
declared sizes bounded before anything is read). An upload (the file's bytes) keeps its byte limits; a
``problem.data`` path may have any size: its variables ``events`` and ``weights`` are bounded by their declared
shape (at most ``max_events`` events per observable) and type before any value is read, every other dataset
still counts towards :data:`MAX_DATA_ARRAY_BYTES`, and only the few small variables used are read besides the
events. The events (and weights) are read in slices of :data:`EVENT_SLICE` events per observable, each checked
for finite values as it arrives, so a fault deep in the file is named by its observable and event.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from qcf_studio.engine.data.filechecks import DataFileError, check_counts, check_cross_sections, check_domain
from qcf_studio.engine.data.measured import MeasuredData
from qcf_studio.engine.data.safe_hdf5 import opened_netcdf
from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.textlimits import clip, shown

__all__ = ["read_netcdf", "MAX_DATA_ARRAY_BYTES", "EVENT_SLICE"]

MAX_DATA_ARRAY_BYTES = 2**30  # what a NetCDF file's datasets other than the events may declare (uncompressed)
EVENT_SLICE = 1 << 18  # events per observable read at a time
_ANY_SIZE = 2**62  # a problem.data path: the file's size is not what bounds the reading
_SMALL = ("xsec", "xsec_err", "counts", "params_true")  # the variables read besides the events and weights
_MAX_TRUTH = 1_000  # params_true values read at most (a problem has a handful of parameters)


def read_netcdf(
    label: str, source: bytes | Path, problem: ProblemInfo, max_bytes: int, max_events: int
) -> MeasuredData:
    """The measured data of ``problem`` in the NetCDF-4 file ``source``: its bytes (an upload of at most
    ``max_bytes``, its datasets declaring at most 4× that) or a path (any size, see the module's docstring)."""
    upload = isinstance(source, bytes)
    try:
        with opened_netcdf(
            source,
            label,
            max_file_bytes=max_bytes if upload else _ANY_SIZE,
            max_data_bytes=min(4 * max_bytes, MAX_DATA_ARRAY_BYTES) if upload else MAX_DATA_ARRAY_BYTES,
            bounded_apart=None if upload else _event_bounds(problem, max_events),
        ) as ds:
            ds, resolution = _checked_layout(label, ds, problem, max_events)
            counts = _declared_counts(ds)
            events = _sliced(label, ds["events"], counts, problem.observable_names)
            weights = _sliced(label, ds["weights"], None, ()) if "weights" in ds else None
            small = ds[[v for v in _SMALL if v in ds]].load()
            dims = ds["events"].dims
    except DataFileError:
        raise
    except (ValueError, OSError) as e:  # safe_hdf5's refusals name the file
        raise DataFileError(str(e)) from None
    except Exception as e:  # noqa: BLE001 (a damaged chunk, a bad compression stream: h5py's errors vary)
        raise DataFileError(f"{label}: cannot be read (a damaged or truncated file? {type(e).__name__})") from None
    small = small.assign(events=(dims, events))
    if weights is not None:
        small = small.assign(weights=(("observable", "event"), weights))
    small.attrs["problem"] = problem.kind
    try:
        data = MeasuredData.from_xarray(small, source=label)
    except ValueError as e:
        raise DataFileError(str(e)) from None
    if data.truth is not None and (
        data.truth.shape != (len(problem.param_names),) or not _real_numbers(data.truth.dtype)
    ):
        data.truth = None  # not this problem's parameters: the data are still usable
    names = list(problem.observable_names)
    check_cross_sections(label, data.xsec, data.xsec_err, problem, "variable 'xsec'")
    counts = data.event_counts  # the events past an observable's count are padding (variable 'counts')
    check_counts(label, dict(zip(names, counts.tolist())))
    for o, n in enumerate(names):
        check_domain(label, problem, n, data.events[o, : counts[o]], resolution, lambda i: f"event {i}")
    return data


def _event_bounds(problem: ProblemInfo, max_events: int) -> dict[str, tuple[int, str]]:
    """The most values the events, weights and event index of a file may declare: ``max_events`` per observable."""
    o, d = len(problem.observable_names), problem.event_dims
    why = f"that limits.events allows ({max_events:,} events per observable); a spec may raise limits.events"
    return {"/events": (o * max_events * d, why), "/weights": (o * max_events, why), "/event": (max_events, why)}


def _checked_layout(label: str, ds: xr.Dataset, problem: ProblemInfo, max_events: int) -> tuple[xr.Dataset, float]:
    """The file's variables, dimensions, types and declared shapes checked (no value of a variable read but the
    observable and coord labels); the dataset with the problem's observables in order, and the resolution."""
    kind = problem.kind
    if "events" not in ds:
        what = "a run result" if "params_pred" in ds else "not measured events data"
        have = clip(", ".join(map(str, ds.data_vars)) or "none")
        raise DataFileError(f"{label}: {what}: no variable 'events' (variables: {have})")
    stored = ds.attrs.get("problem")
    if stored is not None and (not isinstance(stored, str) or stored != kind):  # an array would compare per item
        raise DataFileError(f"{label}: the data are for problem {shown(stored)}, not {kind!r}")
    names = list(problem.observable_names)
    if "observable" not in ds["events"].dims:
        raise DataFileError(
            f"{label}: variable 'events' has dimensions {shown(ds['events'].dims)}, needs "
            f"(observable, event{', coord' if problem.event_dims == 2 else ''})"
        )
    if "observable" in ds.coords:
        listed = [str(v) for v in ds["observable"].values]
        unknown = [n for n in listed if n not in names]
        missing = [n for n in names if n not in listed]
        if unknown or missing or len(listed) != len(names):
            raise DataFileError(
                f"{label}: observables {clip(', '.join(listed))} do not match {kind}'s {', '.join(names)}"
            )
        ds = ds.sel(observable=names)
    expected = ("observable", "event") if problem.event_dims == 1 else ("observable", "event", "coord")
    if ds["events"].dims != expected:
        raise DataFileError(
            f"{label}: variable 'events' has dimensions {shown(ds['events'].dims)}; {kind} events need {expected}"
        )
    if problem.event_dims == 2 and "coord" in ds.coords and [str(c) for c in ds["coord"].values] != ["x", "y"]:
        raise DataFileError(
            f"{label}: coordinate 'coord' is {shown(list(ds['coord'].values))}; {kind} events need ['x', 'y']"
        )
    for var in ("xsec", "xsec_err"):
        if var not in ds:
            raise DataFileError(f"{label}: variable {var!r} (integrated cross section per observable) is missing")
        if ds[var].dims != ("observable",):
            raise DataFileError(f"{label}: variable {var!r} has dimensions {shown(ds[var].dims)}, needs (observable,)")
    if "weights" in ds and ds["weights"].dims != ("observable", "event"):
        raise DataFileError(
            f"{label}: variable 'weights' has dimensions {shown(ds['weights'].dims)}, needs (observable, event)"
        )
    if "counts" in ds and ds["counts"].dims != ("observable",):
        raise DataFileError(
            f"{label}: variable 'counts' has dimensions {shown(ds['counts'].dims)}, needs (observable,)"
        )
    for var in ("events", "xsec", "xsec_err", "weights"):  # text or complex values would fail later, in a worker
        if var in ds and not _real_numbers(ds[var].dtype):
            raise DataFileError(f"{label}: variable {var!r} holds {_value_kind(ds[var].dtype)}, not real numbers")
    shape = ds["events"].shape  # declared: bounded before any event is read
    if shape[0] != len(names) or (problem.event_dims == 2 and shape[2] != 2):
        raise DataFileError(
            f"{label}: variable 'events' has shape {shape}; {kind} events need ({len(names)}, events"
            f"{', 2' if problem.event_dims == 2 else ''})"
        )
    if shape[1] > max_events:
        raise DataFileError(
            f"{label}: variable 'events' holds {shape[1]:,} events per observable, more than limits.events "
            f"({max_events:,}); a spec may raise limits.events where the machine has the memory"
        )
    if "params_true" in ds and ds["params_true"].size > _MAX_TRUTH:
        ds = ds.drop_vars("params_true")  # not this problem's parameters: never read
    resolution = ds.attrs.get("resolution", 0.0)
    try:
        resolution = float(resolution)
    except (TypeError, ValueError):
        resolution = 0.0
    return ds, resolution


def _declared_counts(ds: xr.Dataset) -> np.ndarray | None:
    """The variable 'counts' (events per observable; the rest of a row is padding), if it is whole numbers."""
    if "counts" not in ds or not np.issubdtype(ds["counts"].dtype, np.integer):
        return None  # MeasuredData.from_xarray says what is wrong with it
    counts = np.asarray(ds["counts"].values)
    return counts if counts.shape == ds["events"].shape[:1] else None


def _sliced(label: str, var: xr.DataArray, counts: np.ndarray | None, names: tuple[str, ...]) -> np.ndarray:
    """``var`` (observable, event[, coord]) as float64, read :data:`EVENT_SLICE` events at a time; with ``names``,
    each slice's events (those before ``counts``) checked to be finite."""
    n = var.shape[1]
    out = np.empty(var.shape, dtype=np.float64)
    for a in range(0, n, EVENT_SLICE):
        b = min(a + EVENT_SLICE, n)
        chunk = np.asarray(var[:, a:b].values, dtype=np.float64)
        out[:, a:b] = chunk
        for o, name in enumerate(names):
            valid = chunk[o, : max(0, min(b, int(counts[o]) if counts is not None else n) - a)]
            bad = ~np.isfinite(valid.reshape(len(valid), -1)).all(axis=-1)
            if bad.any():
                raise DataFileError(
                    f"{label}: variable 'events' of observable {name!r}: event {a + int(np.argmax(bad))} is not a "
                    f"finite number"
                )
    return out


def _real_numbers(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _value_kind(dtype: np.dtype) -> str:
    return {"O": "text", "U": "text", "S": "text", "c": "complex numbers", "b": "true/false values"}.get(
        dtype.kind, f"values of type {dtype.name}"
    )
