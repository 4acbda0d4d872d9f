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

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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
MIN_EVENTS = 100  # per observable, as problem.events in a spec
SMEARING_SIGMAS = 6.0  # events may lie this many resolution widths past the domain (the MLE's folded grid)
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")
_PLUS_MINUS = re.compile(r"\s*(?:±|\+/-|\+-)\s*")


class DataFileError(ValueError):
    """A file that cannot be measured data; the message names the file and what is wrong."""


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
    return _read_csv(label, content, problem)


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
    _check_cross_sections(label, data.xsec, data.xsec_err, problem, "variable 'xsec'")
    for o, n in enumerate(names):
        bad = ~np.isfinite(data.events[o]).all(axis=-1)
        if bad.any():
            raise DataFileError(
                f"{label}: variable 'events' of observable {n!r}: event {int(np.argmax(bad))} is not a finite number"
            )
    _check_counts(label, {n: data.events.shape[1] for n in names})
    try:
        resolution = float(resolution)
    except (TypeError, ValueError):
        resolution = 0.0
    for o, n in enumerate(names):
        _check_domain(label, problem, n, data.events[o], resolution, lambda i: f"event {i}")
    return data


def _real_numbers(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)


def _value_kind(dtype: np.dtype) -> str:
    return {"O": "text", "U": "text", "S": "text", "c": "complex numbers", "b": "true/false values"}.get(
        dtype.kind, f"values of type {dtype.name}"
    )


# CSV ------------------------------------------------------------------------------------------------


def _read_csv(label: str, content: bytes, problem: ProblemInfo) -> MeasuredData:
    kind = problem.kind
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = content[: e.start].count(b"\n") + 1
        raise DataFileError(
            f"{label}: not UTF-8 text (line {line}, byte {e.start}); a CSV must be UTF-8, a NetCDF file NetCDF-4"
        ) from None
    if "\x00" in text:
        raise DataFileError(f"{label}: binary data, not CSV text")
    settings: dict[str, tuple[int, str]] = {}
    rows: list[str] = []
    numbers: list[int] = []
    for i, row in enumerate(text.splitlines(), start=1):
        stripped = row.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            m = re.match(r"#\s*(xsec|resolution)\s*:(.*)$", stripped, re.IGNORECASE)
            if m:
                settings[m.group(1).lower()] = (i, m.group(2).strip())
            continue
        rows.append(row)
        numbers.append(i)
    if not rows:
        raise DataFileError(f"{label}: no header and no events (only comments or blank lines)")

    coords = ["x"] if problem.event_dims == 1 else ["x", "y"]
    allowed = ["observable", *coords, "weight"]
    reader = csv.reader(rows)
    header = [h.strip().lower() for h in next(reader)]
    unknown = [h for h in header if h not in allowed]
    if unknown:
        raise DataFileError(
            f"{label}: line {numbers[0]}: unknown column {shown(unknown[0])}; {kind} event columns are "
            f"{', '.join(allowed)} (weight optional)"
        )
    dup = [h for h in header if header.count(h) > 1]
    if dup:
        raise DataFileError(f"{label}: line {numbers[0]}: column {shown(dup[0])} appears twice")
    missing = [h for h in allowed[:-1] if h not in header]
    if missing:
        raise DataFileError(
            f"{label}: line {numbers[0]}: the header lacks column(s) {', '.join(missing)}; {kind} "
            f"events need {', '.join(allowed[:-1])} (and optionally weight)"
        )
    names = problem.observable_names
    col_obs = header.index("observable")
    numeric = [(c, header.index(c)) for c in [*coords, "weight"] if c in header]
    n_fields = len(header)
    parsed = _parse_rows_fast(rows[1:], header, [c for c, _ in numeric], names)
    if parsed is None:  # something is wrong: the line-by-line reader finds the first fault and says where
        parsed = _parse_rows_slowly(label, kind, reader, numbers[1:], n_fields, col_obs, numeric, names)
    per_obs, line_numbers = parsed
    lines_of = {n: np.asarray(numbers[1:])[line_numbers[n]] for n in names}

    _check_counts(label, {n: len(v) for n, v in per_obs.items()})
    table = np.stack([per_obs[n] for n in names]).astype(np.float64)  # (O, N, D[+1])
    d = len(coords)
    events = table[..., :d]
    weights = table[..., d] if "weight" in header else None
    if weights is not None:
        for o, n in enumerate(names):
            if not weights[o].sum() > 0:
                raise DataFileError(f"{label}: column 'weight': all weights of observable {n!r} are zero")
    resolution = 0.0
    if "resolution" in settings:
        line, value = settings["resolution"]
        try:
            resolution = float(value)
        except ValueError:
            resolution = -1.0
        if not 0.0 <= resolution < 1.0:
            raise DataFileError(f"{label}: line {line}: resolution {shown(value)} must be a number in [0, 1)")
    for o, n in enumerate(names):
        _check_domain(label, problem, n, events[o], resolution, lambda i, n=n: f"line {lines_of[n][i]}")
    xsec, xsec_err = _csv_cross_sections(label, settings.get("xsec"), problem, weights, events.shape[1])
    try:
        return MeasuredData(kind, events, xsec, xsec_err, None, weights)
    except ValueError as e:
        raise DataFileError(f"{label}: {e}") from None


def _parse_rows_slowly(
    label: str,
    kind: str,
    reader: Iterator[list[str]],
    numbers: list[int],
    n_fields: int,
    col_obs: int,
    numeric: list[tuple[str, int]],
    names: tuple[str, ...],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Events per observable ``(N, columns)`` and their row indices, reading line by line (exact messages)."""
    per_obs: dict[str, list[list[float]]] = {n: [] for n in names}
    rows_of: dict[str, list[int]] = {n: [] for n in names}
    for k, (fields, line) in enumerate(zip(reader, numbers)):
        if len(fields) != n_fields:
            raise DataFileError(f"{label}: line {line}: {len(fields)} fields, the header has {n_fields}")
        obs = fields[col_obs].strip()
        if obs not in per_obs:
            raise DataFileError(
                f"{label}: line {line}, column 'observable': unknown observable {shown(obs)}; "
                f"{kind} has "
                f"{', '.join(names)}"
            )
        values = []
        for col, j in numeric:
            cell = fields[j].strip()
            try:
                v = float(cell)
            except ValueError:
                raise DataFileError(f"{label}: line {line}, column {col!r}: {shown(cell)} is not a number") from None
            if not np.isfinite(v):
                raise DataFileError(f"{label}: line {line}, column {col!r}: {shown(cell)} is not a finite number")
            if col == "weight" and v < 0:
                raise DataFileError(
                    f"{label}: line {line}, column 'weight': negative weight {shown(cell)}; "
                    f"weights must be "
                    f"non-negative"
                )
            values.append(v)
        per_obs[obs].append(values)
        rows_of[obs].append(k)
    cols = len(numeric)
    return (
        {n: np.asarray(v, dtype=np.float64).reshape(-1, cols) for n, v in per_obs.items()},
        {n: np.asarray(v, dtype=np.int64) for n, v in rows_of.items()},
    )


def _parse_rows_fast(rows: list[str], header: list[str], columns: list[str], names: tuple[str, ...]):
    """As :func:`_parse_rows_slowly` with pandas' C reader, or ``None`` at the first sign of trouble."""
    import pandas as pd  # an xarray dependency

    try:
        df = pd.read_csv(
            io.StringIO("\n".join(rows)), header=None, names=header, dtype=str, keep_default_na=False, engine="c"
        )
        if len(df) != len(rows):
            return None
        obs = df["observable"].str.strip().to_numpy()
        values = df[columns].apply(lambda c: c.str.strip()).astype(np.float64).to_numpy()
    except Exception:  # any parse problem: the slow reader says which line
        return None
    if not np.isfinite(values).all() or ("weight" in columns and (values[:, -1] < 0).any()):
        return None
    if not np.isin(obs, list(names)).all():
        return None
    index = {n: np.flatnonzero(obs == n) for n in names}
    return {n: values[i] for n, i in index.items()}, index


def _csv_cross_sections(
    label: str, setting: tuple[int, str] | None, problem: ProblemInfo, weights: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    names = problem.observable_names
    example = ", ".join(f"{o}=<value>±<error>" for o in names)
    if setting is None:
        if problem.normalisation_params:
            raise DataFileError(
                f"{label}: no cross sections: {problem.kind} needs the integrated cross section of each observable "
                f"to fix its normalisations ({', '.join(problem.normalisation_params)}); add the comment line "
                f"'# xsec: {example}'"
            )
        # Unused by this problem's fits: the (weighted) event count and its Poisson error stand in.
        if weights is None:
            return np.full(len(names), float(n)), np.full(len(names), np.sqrt(n))
        return weights.sum(axis=1), np.sqrt((weights**2).sum(axis=1))
    line, text = setting
    values: dict[str, tuple[float, float]] = {}
    for item in filter(None, (s.strip() for s in re.split(r"[,;]", text))):
        m = re.match(r"^([^=\s]+)\s*=\s*(.+)$", item)
        parts = _PLUS_MINUS.split(m.group(2).strip()) if m else []
        try:
            value, err = (float(parts[0]), float(parts[1])) if len(parts) == 2 else (None, None)
        except ValueError:
            value, err = None, None
        if m is None or value is None or err is None:
            raise DataFileError(
                f"{label}: line {line}: cannot read cross section {shown(item)}; write '# xsec: {example}'"
            )
        if m.group(1) not in names:
            raise DataFileError(
                f"{label}: line {line}: unknown observable {shown(m.group(1))} in xsec; "
                f"{problem.kind} has "
                f"{', '.join(names)}"
            )
        values[m.group(1)] = (value, err)
    missing = [o for o in names if o not in values]
    if missing:
        raise DataFileError(
            f"{label}: line {line}: no cross section for {', '.join(missing)}; write '# xsec: {example}'"
        )
    xsec = np.asarray([values[o][0] for o in names])
    xsec_err = np.asarray([values[o][1] for o in names])
    _check_cross_sections(label, xsec, xsec_err, problem, f"line {line}")
    return xsec, xsec_err


# Checks shared by both formats -------------------------------------------------------------------------


def _check_cross_sections(label: str, xsec: np.ndarray, err: np.ndarray, problem: ProblemInfo, where: str) -> None:
    for n, v, e in zip(problem.observable_names, xsec, err):
        if not (np.isfinite(v) and np.isfinite(e)):
            raise DataFileError(f"{label}: {where}: the cross section of {n!r} is not finite ({v} ± {e})")
        if not e > 0:
            raise DataFileError(f"{label}: {where}: the cross-section error of {n!r} must be positive, got {e}")


def _check_counts(label: str, counts: dict[str, int]) -> None:
    few = {n: c for n, c in counts.items() if c < MIN_EVENTS}
    if few:
        n, c = next(iter(few.items()))
        raise DataFileError(
            f"{label}: observable {n!r} has {c} events; at least {MIN_EVENTS} per observable are needed"
        )
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n}: {c}" for n, c in counts.items())
        raise DataFileError(
            f"{label}: the observables have different numbers of events ({listed}); every observable "
            f"needs the same number (subsample to {min(counts.values())} each)"
        )


def _check_domain(label: str, problem: ProblemInfo, name: str, events: np.ndarray, resolution: float, where) -> None:
    """Every event inside the domain, widened by ``SMEARING_SIGMAS`` resolution widths for smeared data."""
    k = SMEARING_SIGMAS * resolution
    for axis, (coord, (a, b)) in enumerate(zip("xy", problem.domain)):
        lo, hi = a - k * abs(a), b + k * abs(b)
        v = events[:, axis]
        out = (v < lo) | (v > hi)
        if out.any():
            i = int(np.argmax(out))
            span = f"[{lo:.6g}, {hi:.6g}]"
            if k:
                span += f" (resolution {resolution} allows {SMEARING_SIGMAS:g} widths past [{a}, {b}])"
            raise DataFileError(
                f"{label}: {int(out.sum())} events of observable {name!r} lie outside the "
                f"{problem.kind} "
                f"domain {coord} ∈ {span}; first at {where(i)}: {coord} = {v[i]:.6g}"
            )
