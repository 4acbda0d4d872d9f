"""Measured data from a file (NetCDF or CSV of events, optional per-event weights) → ``MeasuredData``.

One reader for uploads (:func:`read_measured`, given the file's bytes) and for the files a spec's
``problem.data`` names (:func:`read_measured_file`): both apply the same checks, and NetCDF files are
opened through :mod:`engine.data.safe_hdf5` (no external storage, links or virtual datasets; declared sizes
bounded before anything is read). Every refusal is a :class:`DataFileError` naming the file and the line,
column or variable at fault; no message echoes more than a few characters of the file.

Formats:

- **NetCDF-4** as ``qcf-studio data`` writes it: ``events`` (observable, event[, coord]) with the problem's
  observable names (and ``coord = x, y`` for 2D events), ``xsec`` and ``xsec_err`` (observable), optionally
  ``weights`` (observable, event) and ``params_true`` (param).
- **CSV** (UTF-8, comma-separated) with a header line naming the columns ``observable`` (the problem's
  observable names), the event coordinates (``x``; ``x,y`` for 2D problems) and optionally ``weight``;
  one event per line. Lines starting with ``#`` are comments, two of which carry settings::

      # xsec: sigma1=12.3±0.1, sigma2=4.56±0.05
      # resolution: 0.05
      observable,x,weight
      sigma1,0.1234,1.0

  ``xsec`` gives each observable's integrated cross section and its error (``±``, ``+-`` or ``+/-``).
  The cross sections fix the normalisations that event shapes cannot, so they are required for problems
  with normalisation parameters (proxy1d); for the other problems they are optional and default to the
  (weighted) event count ± √Σw², which their fits do not use. ``resolution`` is the relative detector
  resolution the events were smeared with: it lets events lie up to 6 resolution widths past the domain's
  ends (as smeared pseudo-data do); without it every event must lie inside the domain.

Every observable needs the same number of events, at least :data:`MIN_EVENTS` (the arrays are
``(observable, event)``): a file with unequal counts is rejected, not padded or cut, so that nothing is
dropped silently. Weights must be finite and non-negative (see :mod:`engine.data.pseudodata` for how the fits
use them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data.csvfiles import read_csv
from engine.data.filechecks import MIN_EVENTS, DataFileError, check_counts, check_cross_sections, check_domain
from engine.data.measured import MeasuredData
from engine.data.safe_hdf5 import HDF5_SIGNATURE, open_netcdf
from engine.problem_catalog import ProblemInfo, problem_info, problem_kinds
from engine.specfields import SpecError
from engine.textlimits import clip, shown

__all__ = [
    "DataFileError",
    "read_measured",
    "read_measured_file",
    "read_spec_data",
    "file_label",
    "MAX_UPLOAD_BYTES",
    "MAX_DATA_FILE_BYTES",
    "MAX_DATA_ARRAY_BYTES",
    "MIN_EVENTS",
]

MAX_UPLOAD_BYTES = 50 * 2**20  # a file uploaded in the browser
MAX_DATA_FILE_BYTES = 2**30  # a file named by problem.data
MAX_DATA_ARRAY_BYTES = 2**30  # what a NetCDF file's datasets may declare (uncompressed), whatever its size
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")


def file_label(name: str) -> str:
    """What messages call a file: its last path component, clipped, control characters escaped."""
    return clip(Path(name.replace("\x00", "")).name or "upload", 80) if name else "upload"


def read_measured(name: str, content: bytes, kind: str, max_bytes: int = MAX_UPLOAD_BYTES) -> MeasuredData:
    """The measured data of problem ``kind`` in the file ``name`` with bytes ``content`` (an upload).

    NetCDF is recognised by its HDF5 signature, anything else is read as CSV (see the module's
    docstring for both formats). Raises :class:`DataFileError` naming ``name`` and, where it can, the
    line, column or variable at fault.
    """
    label = file_label(name)
    problem = _problem(label, kind)
    if len(content) > max_bytes:
        raise DataFileError(
            f"{label}: the file has {len(content) / 2**20:.1f} MiB, more than the upload limit of "
            f"{max_bytes / 2**20:.1f} MiB"
        )
    if content.startswith(HDF5_SIGNATURE):
        return _read_netcdf(label, content, problem, max_bytes)
    return _read_text(label, content, problem)


def read_measured_file(path: str | Path, kind: str, max_bytes: int = MAX_DATA_FILE_BYTES) -> MeasuredData:
    """The measured data of problem ``kind`` in the file at ``path`` (``problem.data``): the checks of
    :func:`read_measured`; a NetCDF file is checked before its values are read, not read into memory whole."""
    label = clip(str(path), 200)
    problem = _problem(label, kind)
    try:
        with open(path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
            # NetCDF is checked and read by engine.data.safe_hdf5; text is read here, never past the limit
            content = b"" if head == HDF5_SIGNATURE else head + f.read(max_bytes + 1 - len(head))
    except (OSError, ValueError) as e:
        raise DataFileError(f"{label}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    if head == HDF5_SIGNATURE:
        return _read_netcdf(label, Path(path), problem, max_bytes)
    if len(content) > max_bytes:
        raise DataFileError(f"{label}: more than the limit of {max_bytes / 2**20:,.0f} MiB")
    return _read_text(label, content, problem)


def read_spec_data(path: str | Path, kind: str) -> MeasuredData:
    """The measured data a spec's ``problem.data`` names, as :func:`read_measured_file`; what is wrong with the
    file is a :class:`~engine.specfields.SpecError` of ``problem.data`` (``qcf-studio validate`` and
    :func:`engine.run.runner.measured_data` check a spec's data so, before dispatch)."""
    try:
        return read_measured_file(path, kind)
    except DataFileError as e:
        raise SpecError("problem.data", str(e)) from None


def _problem(label: str, kind: str) -> ProblemInfo:
    try:
        return problem_info(kind)
    except KeyError:
        raise DataFileError(
            f"{label}: unknown problem {shown(kind)}; choose one of {', '.join(problem_kinds())}"
        ) from None


def _read_text(label: str, content: bytes, problem: ProblemInfo) -> MeasuredData:
    if not content.strip():
        raise DataFileError(f"{label}: the file is empty")
    if content.startswith(b"CDF\x01") or content.startswith(b"CDF\x02"):
        raise DataFileError(f"{label}: classic NetCDF-3 files are not read here; write NetCDF-4 (as `qcf-studio data`)")
    if label.lower().endswith(_NETCDF_SUFFIXES):
        raise DataFileError(f"{label}: not a NetCDF-4 file (no HDF5 signature); CSV files should end in .csv")
    return read_csv(label, content, problem)


# NetCDF ---------------------------------------------------------------------------------------------


def _read_netcdf(label: str, source: bytes | Path, problem: ProblemInfo, max_bytes: int) -> MeasuredData:
    kind = problem.kind
    try:
        ds = open_netcdf(
            source, label, max_file_bytes=max_bytes, max_data_bytes=min(4 * max_bytes, MAX_DATA_ARRAY_BYTES)
        )
    except (ValueError, OSError) as e:
        raise DataFileError(str(e)) from None
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
    for var in ("events", "xsec", "xsec_err", "weights"):  # text or complex values would fail later, in a worker
        if var in ds and not _real_numbers(ds[var].dtype):
            raise DataFileError(f"{label}: variable {var!r} holds {_value_kind(ds[var].dtype)}, not real numbers")
    ds.attrs["problem"] = kind
    try:
        data = MeasuredData.from_xarray(ds, source=label)
    except ValueError as e:
        raise DataFileError(str(e)) from None
    if data.truth is not None and (
        data.truth.shape != (len(problem.param_names),) or not _real_numbers(data.truth.dtype)
    ):
        data.truth = None  # not this problem's parameters: the data are still usable
    resolution = ds.attrs.get("resolution", 0.0)
    check_cross_sections(label, data.xsec, data.xsec_err, problem, "variable 'xsec'")
    for o, n in enumerate(names):
        bad = ~np.isfinite(data.events[o]).all(axis=-1)
        if bad.any():
            raise DataFileError(
                f"{label}: variable 'events' of observable {n!r}: event {int(np.argmax(bad))} is not a finite number"
            )
    check_counts(label, {n: data.events.shape[1] for n in names})
    try:
        resolution = float(resolution)
    except (TypeError, ValueError):
        resolution = 0.0
    for o, n in enumerate(names):
        check_domain(label, problem, n, data.events[o], resolution, lambda i: f"event {i}")
    return data


def _real_numbers(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _value_kind(dtype: np.dtype) -> str:
    return {"O": "text", "U": "text", "S": "text", "c": "complex numbers", "b": "true/false values"}.get(
        dtype.kind, f"values of type {dtype.name}"
    )


# CSV ------------------------------------------------------------------------------------------------
