"""Measured data uploaded as a file (NetCDF or CSV of events, optional per-event weights) → ``MeasuredData``.

No Panel here: the dashboard hands over the file's name and bytes, shows :class:`UploadError`'s message
as it is, and saves the result with :func:`save_upload` where a spec's ``problem.data`` can name it.

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
dropped silently. Weights must be finite and non-negative (see :mod:`engine.pseudodata` for how the fits
use them).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import xarray as xr

from engine.problems import Problem, get_problem, problem_kinds
from engine.pseudodata import MeasuredData
from engine.results import write_netcdf_atomic

__all__ = ["UploadError", "read_measured_upload", "save_upload", "upload_summary", "MAX_UPLOAD_BYTES", "MIN_EVENTS"]

MAX_UPLOAD_BYTES = 50 * 2**20
MIN_EVENTS = 100  # per observable, as problem.events in a spec
SMEARING_SIGMAS = 6.0  # events may lie this many resolution widths past the domain (the MLE's folded grid)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")
_PLUS_MINUS = re.compile(r"\s*(?:±|\+/-|\+-)\s*")


class UploadError(ValueError):
    """An uploaded file that cannot be measured data; the message names the file and what is wrong."""


def read_measured_upload(name: str, content: bytes, kind: str, max_bytes: int = MAX_UPLOAD_BYTES) -> MeasuredData:
    """The measured data of problem ``kind`` in the uploaded file ``name`` with bytes ``content``.

    NetCDF is recognised by its HDF5 signature, anything else is read as CSV (see the module's
    docstring for both formats). Raises :class:`UploadError` naming ``name`` and, where it can, the
    line, column or variable at fault.
    """
    label = Path(name).name or "upload"
    if kind not in problem_kinds():
        raise UploadError(f"{label}: unknown problem {kind!r}; choose one of {', '.join(problem_kinds())}")
    problem = get_problem(kind)
    if len(content) > max_bytes:
        raise UploadError(
            f"{label}: the file has {len(content) / 2**20:.1f} MiB, more than the upload limit of "
            f"{max_bytes / 2**20:.1f} MiB"
        )
    if not content.strip():
        raise UploadError(f"{label}: the file is empty")
    if content.startswith(_HDF5_MAGIC):
        data = _read_netcdf(label, content, problem)
    elif content.startswith(b"CDF\x01") or content.startswith(b"CDF\x02"):
        raise UploadError(f"{label}: classic NetCDF-3 files are not read here; write NetCDF-4 (as `qcf-studio data`)")
    elif label.lower().endswith(_NETCDF_SUFFIXES):
        raise UploadError(f"{label}: not a NetCDF-4 file (no HDF5 signature); CSV files should end in .csv")
    else:
        data = _read_csv(label, content, problem)
    return data


def save_upload(data: MeasuredData, directory: Path, name: str) -> Path:
    """Write ``data`` as NetCDF under ``directory`` (atomically) and return the path for ``problem.data``.

    The file name is ``name``'s stem reduced to letters, digits, ``.``, ``_`` and ``-`` (at most 80
    characters) plus ``.nc``; an existing file is never overwritten (``-2``, ``-3``, ... are appended).
    """
    directory = Path(directory)
    stem = Path(Path(name).name).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80] or "upload"
    path, i = directory / f"{stem}.nc", 1
    while path.exists():
        i += 1
        path = directory / f"{stem}-{i}.nc"
    ds = data.to_xarray()
    ds.attrs["source"] = Path(name).name
    return write_netcdf_atomic(ds, path)


def upload_summary(data: MeasuredData) -> str:
    """One line on uploaded data for the page: problem, events per observable, weights, cross sections."""
    problem = get_problem(data.kind)
    xs = ", ".join(f"{n} {v:.4g}±{e:.2g}" for n, v, e in zip(problem.observable_names, data.xsec, data.xsec_err))
    weighted = "weighted" if data.weights is not None else "unweighted"
    return f"{data.kind}: {data.events.shape[1]:,} {weighted} events per observable; cross sections {xs}"


# NetCDF ---------------------------------------------------------------------------------------------


def _read_netcdf(label: str, content: bytes, problem: Problem) -> MeasuredData:
    kind = problem.kind
    try:
        with xr.open_dataset(io.BytesIO(content), engine="h5netcdf") as raw:
            ds = raw.load()
    except Exception as e:  # h5py/h5netcdf raise many types for damaged files
        raise UploadError(f"{label}: not a readable NetCDF-4 file ({type(e).__name__}: {e})") from None
    if "events" not in ds:
        what = "a run result" if "params_pred" in ds else "not measured events data"
        have = ", ".join(map(str, ds.data_vars)) or "none"
        raise UploadError(f"{label}: {what}: no variable 'events' (variables: {have})")
    stored = ds.attrs.get("problem")
    if stored is not None and stored != kind:
        raise UploadError(f"{label}: the data are for problem {stored!r}, not {kind!r}")
    names = list(problem.observable_names)
    if "observable" not in ds["events"].dims:
        raise UploadError(f"{label}: variable 'events' has dimensions {ds['events'].dims}, needs (observable, event"
                          f"{', coord' if problem.event_dims == 2 else ''})")
    if "observable" in ds.coords:
        have = [str(v) for v in ds["observable"].values]
        unknown = [n for n in have if n not in names]
        missing = [n for n in names if n not in have]
        if unknown or missing:
            raise UploadError(f"{label}: observables {', '.join(have)} do not match {kind}'s {', '.join(names)}")
        ds = ds.sel(observable=names)
    expected = ("observable", "event") if problem.event_dims == 1 else ("observable", "event", "coord")
    if ds["events"].dims != expected:
        raise UploadError(f"{label}: variable 'events' has dimensions {ds['events'].dims}; {kind} events need "
                          f"{expected}")
    if problem.event_dims == 2 and "coord" in ds.coords and [str(c) for c in ds["coord"].values] != ["x", "y"]:
        raise UploadError(f"{label}: coordinate 'coord' is {list(ds['coord'].values)}; {kind} events need ['x', 'y']")
    for var in ("xsec", "xsec_err"):
        if var not in ds:
            raise UploadError(f"{label}: variable {var!r} (integrated cross section per observable) is missing")
        if ds[var].dims != ("observable",):
            raise UploadError(f"{label}: variable {var!r} has dimensions {ds[var].dims}, needs (observable,)")
    if "weights" in ds and ds["weights"].dims != ("observable", "event"):
        raise UploadError(f"{label}: variable 'weights' has dimensions {ds['weights'].dims}, needs (observable, event)")
    ds.attrs["problem"] = kind
    try:
        data = MeasuredData.from_xarray(ds, source=label)
    except ValueError as e:
        raise UploadError(str(e)) from None
    if data.truth is not None and data.truth.shape != (len(problem.param_names),):
        data.truth = None  # not this problem's parameters: the data are still usable
    resolution = ds.attrs.get("resolution", 0.0)
    _check_cross_sections(label, data.xsec, data.xsec_err, problem, "variable 'xsec'")
    for o, n in enumerate(names):
        bad = ~np.isfinite(data.events[o]).all(axis=-1)
        if bad.any():
            raise UploadError(f"{label}: variable 'events' of observable {n!r}: event {int(np.argmax(bad))} is not a "
                              f"finite number")
    _check_counts(label, {n: data.events.shape[1] for n in names})
    try:
        resolution = float(resolution)
    except (TypeError, ValueError):
        resolution = 0.0
    for o, n in enumerate(names):
        _check_domain(label, problem, n, data.events[o], resolution, lambda i: f"event {i}")
    return data


# CSV ------------------------------------------------------------------------------------------------


def _read_csv(label: str, content: bytes, problem: Problem) -> MeasuredData:
    kind = problem.kind
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = content[: e.start].count(b"\n") + 1
        raise UploadError(f"{label}: not UTF-8 text (line {line}, byte {e.start}); a CSV must be UTF-8, "
                          f"a NetCDF file NetCDF-4") from None
    if "\x00" in text:
        raise UploadError(f"{label}: binary data, not CSV text")
    settings: dict[str, tuple[int, str]] = {}
    rows: list[str] = []
    numbers: list[int] = []
    for i, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            m = re.match(r"#\s*(xsec|resolution)\s*:(.*)$", stripped, re.IGNORECASE)
            if m:
                settings[m.group(1).lower()] = (i, m.group(2).strip())
            continue
        rows.append(line)
        numbers.append(i)
    if not rows:
        raise UploadError(f"{label}: no header and no events (only comments or blank lines)")

    coords = ["x"] if problem.event_dims == 1 else ["x", "y"]
    allowed = ["observable", *coords, "weight"]
    reader = csv.reader(rows)
    header = [h.strip().lower() for h in next(reader)]
    unknown = [h for h in header if h not in allowed]
    if unknown:
        raise UploadError(f"{label}: line {numbers[0]}: unknown column {unknown[0]!r}; {kind} event columns are "
                          f"{', '.join(allowed)} (weight optional)")
    dup = [h for h in header if header.count(h) > 1]
    if dup:
        raise UploadError(f"{label}: line {numbers[0]}: column {dup[0]!r} appears twice")
    missing = [h for h in allowed[:-1] if h not in header]
    if missing:
        raise UploadError(f"{label}: line {numbers[0]}: the header lacks column(s) {', '.join(missing)}; {kind} "
                          f"events need {', '.join(allowed[:-1])} (and optionally weight)")
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
                raise UploadError(f"{label}: column 'weight': all weights of observable {n!r} are zero")
    resolution = 0.0
    if "resolution" in settings:
        line, value = settings["resolution"]
        try:
            resolution = float(value)
        except ValueError:
            resolution = -1.0
        if not 0.0 <= resolution < 1.0:
            raise UploadError(f"{label}: line {line}: resolution {value!r} must be a number in [0, 1)")
    for o, n in enumerate(names):
        _check_domain(label, problem, n, events[o], resolution, lambda i, n=n: f"line {lines_of[n][i]}")
    xsec, xsec_err = _csv_cross_sections(label, settings.get("xsec"), problem, weights, events.shape[1])
    try:
        return MeasuredData(kind, events, xsec, xsec_err, None, weights)
    except ValueError as e:
        raise UploadError(f"{label}: {e}") from None


def _parse_rows_slowly(label, kind, reader, numbers, n_fields, col_obs, numeric, names):
    """Events per observable ``(N, columns)`` and their row indices, reading line by line (exact messages)."""
    per_obs: dict[str, list[list[float]]] = {n: [] for n in names}
    rows_of: dict[str, list[int]] = {n: [] for n in names}
    for k, (fields, line) in enumerate(zip(reader, numbers)):
        if len(fields) != n_fields:
            raise UploadError(f"{label}: line {line}: {len(fields)} fields, the header has {n_fields}")
        obs = fields[col_obs].strip()
        if obs not in per_obs:
            raise UploadError(f"{label}: line {line}, column 'observable': unknown observable {obs!r}; {kind} has "
                              f"{', '.join(names)}")
        values = []
        for col, j in numeric:
            cell = fields[j].strip()
            try:
                v = float(cell)
            except ValueError:
                raise UploadError(f"{label}: line {line}, column {col!r}: {cell!r} is not a number") from None
            if not np.isfinite(v):
                raise UploadError(f"{label}: line {line}, column {col!r}: {cell!r} is not a finite number")
            if col == "weight" and v < 0:
                raise UploadError(f"{label}: line {line}, column 'weight': negative weight {cell}; weights must be "
                                  f"non-negative")
            values.append(v)
        per_obs[obs].append(values)
        rows_of[obs].append(k)
    cols = len(numeric)
    return ({n: np.asarray(v, dtype=np.float64).reshape(-1, cols) for n, v in per_obs.items()},
            {n: np.asarray(v, dtype=np.int64) for n, v in rows_of.items()})


def _parse_rows_fast(rows: list[str], header: list[str], columns: list[str], names: tuple[str, ...]):
    """As :func:`_parse_rows_slowly` with pandas' C reader, or ``None`` at the first sign of trouble."""
    import pandas as pd  # an xarray dependency

    try:
        df = pd.read_csv(io.StringIO("\n".join(rows)), header=None, names=header, dtype=str, keep_default_na=False,
                         engine="c")
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
    label: str, setting: tuple[int, str] | None, problem: Problem, weights: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    names = problem.observable_names
    example = ", ".join(f"{o}=<value>±<error>" for o in names)
    if setting is None:
        if problem.normalisation_params:
            raise UploadError(
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
            raise UploadError(f"{label}: line {line}: cannot read cross section {item!r}; write '# xsec: {example}'")
        if m.group(1) not in names:
            raise UploadError(f"{label}: line {line}: unknown observable {m.group(1)!r} in xsec; {problem.kind} has "
                              f"{', '.join(names)}")
        values[m.group(1)] = (value, err)
    missing = [o for o in names if o not in values]
    if missing:
        raise UploadError(f"{label}: line {line}: no cross section for {', '.join(missing)}; write '# xsec: {example}'")
    xsec = np.asarray([values[o][0] for o in names])
    xsec_err = np.asarray([values[o][1] for o in names])
    _check_cross_sections(label, xsec, xsec_err, problem, f"line {line}")
    return xsec, xsec_err


# Checks shared by both formats -------------------------------------------------------------------------


def _check_cross_sections(label: str, xsec: np.ndarray, err: np.ndarray, problem: Problem, where: str) -> None:
    for n, v, e in zip(problem.observable_names, xsec, err):
        if not (np.isfinite(v) and np.isfinite(e)):
            raise UploadError(f"{label}: {where}: the cross section of {n!r} is not finite ({v} ± {e})")
        if not e > 0:
            raise UploadError(f"{label}: {where}: the cross-section error of {n!r} must be positive, got {e}")


def _check_counts(label: str, counts: dict[str, int]) -> None:
    few = {n: c for n, c in counts.items() if c < MIN_EVENTS}
    if few:
        n, c = next(iter(few.items()))
        raise UploadError(f"{label}: observable {n!r} has {c} events; at least {MIN_EVENTS} per observable are needed")
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n}: {c}" for n, c in counts.items())
        raise UploadError(f"{label}: the observables have different numbers of events ({listed}); every observable "
                          f"needs the same number (subsample to {min(counts.values())} each)")


def _check_domain(label: str, problem: Problem, name: str, events: np.ndarray, resolution: float, where) -> None:
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
            raise UploadError(f"{label}: {int(out.sum())} events of observable {name!r} lie outside the {problem.kind} "
                              f"domain {coord} ∈ {span}; first at {where(i)}: {coord} = {v[i]:.6g}")
