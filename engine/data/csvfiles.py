"""Measured events from CSV text (the format is described in :mod:`qcf_studio.engine.data.datafiles`): a header naming
the columns, one event per line, ``# xsec:`` and ``# resolution:`` comments; each refusal names the line and
column at fault."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from typing import IO

import numpy as np

from qcf_studio.engine.data.filechecks import (
    DataFileError,
    check_counts,
    check_cross_sections,
    check_domain,
    file_resolution,
)
from qcf_studio.engine.data.measured import MeasuredData
from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.textlimits import shown

__all__ = ["read_csv", "parse_cross_sections", "BLOCK_BYTES", "MAX_LINE_BYTES"]

BLOCK_BYTES = 2**18  # text read at a time (whole lines): what the reader holds of the file besides its events
MAX_LINE_BYTES = 2**20  # one line (a CSV event line has tens of bytes)

_Part = tuple[np.ndarray, np.ndarray, np.ndarray]  # one block's values of an observable; index and line outside
_PLUS_MINUS = re.compile(r"\s*(?:±|\+/-|\+-)\s*")


def read_csv(label: str, stream: IO[bytes], problem: ProblemInfo, max_events: int, prefix: bytes = b"") -> MeasuredData:
    """The measured data of ``problem`` in the CSV text ``prefix`` + ``stream``, read :data:`BLOCK_BYTES` at a time
    (whole lines): the text is never held whole, only the events (at most ``max_events`` per observable, refused
    at the first block past that) and their line numbers, for messages."""
    kind = problem.kind
    names = problem.observable_names
    coords = ["x"] if problem.event_dims == 1 else ["x", "y"]
    settings: dict[str, tuple[int, str]] = {}
    header: list[str] | None = None
    parts: dict[str, list[_Part]] = {n: [] for n in names}  # per block
    counts = dict.fromkeys(names, 0)
    text = False
    for start, lines in _blocks(label, prefix, stream):
        rows: list[str] = []
        numbers: list[int] = []
        for i, row in enumerate(lines, start=start):
            stripped = row.strip()
            if not stripped:
                continue
            text = True
            if stripped.startswith("#"):
                m = re.match(r"#\s*(xsec|resolution)\s*:(.*)$", stripped, re.IGNORECASE)
                if m:
                    settings[m.group(1).lower()] = (i, m.group(2).strip())
                continue
            rows.append(row)
            numbers.append(i)
        if header is None and rows:
            header = _header(label, problem, rows[0], numbers[0])
            del rows[0], numbers[0]
        if rows and header is not None:
            _add_block(label, problem, header, rows, numbers, parts, counts, max_events)
    if not text:
        raise DataFileError(f"{label}: the file is empty")
    if header is None:
        raise DataFileError(f"{label}: no header and no events (only comments or blank lines)")

    check_counts(label, counts)
    d, c = len(coords), np.asarray([counts[n] for n in names], dtype=np.int64)
    table = np.empty((len(names), int(c.max()), d))  # padded past each observable's count (MeasuredData.counts)
    w = np.zeros(table.shape[:2]) if "weight" in header else None
    lines_of: dict[str, Callable[[int], str]] = {}
    for o, n in enumerate(names):  # each block's arrays let go as they are copied in
        k, outside = 0, []
        while parts[n]:
            values, *kept = parts[n].pop(0)
            table[o, k : k + len(values)] = values[:, :d]
            if w is not None:
                w[o, k : k + len(values)] = values[:, d]
            outside.append(kept)
            k += len(values)
        table[o, k:] = table[o, 0]
        lines_of[n] = _line_of(*(np.concatenate(a) for a in zip(*outside)))
    events = [table[o, : c[o]] for o in range(len(names))]  # (N_o, D) per observable; the counts may differ
    weights = None if w is None else [w[o, : c[o]] for o in range(len(names))]
    for n, wo in zip(names, weights or ()):
        if not wo.sum() > 0:
            what = "are all zero" if not wo.any() else f"sum to {wo.sum():.6g}, not above 0"
            raise DataFileError(f"{label}: column 'weight': the weights of observable {n!r} {what}")
    resolution = 0.0
    if "resolution" in settings:
        line, value = settings["resolution"]
        resolution = file_resolution(label, value, f"line {line}: resolution")
    for o, n in enumerate(names):
        check_domain(label, problem, n, events[o], resolution, lines_of[n])
    setting = settings.get("xsec")
    where = f"line {setting[0]}" if setting else None
    xsec, xsec_err = parse_cross_sections(label, setting[1] if setting else None, problem, events, weights, where)
    try:
        return MeasuredData(kind, table, xsec, xsec_err, None, w, c)
    except ValueError as e:
        raise DataFileError(f"{label}: {e}") from None


def _blocks(label: str, prefix: bytes, stream: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """The text's lines, :data:`BLOCK_BYTES` at a time, with the line number of each block's first line: each block
    ends at a line break (so a UTF-8 character or a CRLF is never split), no line may exceed
    :data:`MAX_LINE_BYTES`, and the text must be UTF-8 without NUL characters."""
    rest, line, offset, first = prefix, 1, 0, True
    while True:
        try:
            data = stream.read(BLOCK_BYTES)
        except (OSError, ValueError) as e:
            raise DataFileError(f"{label}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
        buf = rest + data
        cut = buf.rfind(b"\n") + 1 if data else len(buf)
        block, rest = buf[:cut], buf[cut:]
        if len(rest) > MAX_LINE_BYTES:
            at = line + block.count(b"\n")
            raise DataFileError(f"{label}: line {at} is longer than {MAX_LINE_BYTES // 2**20} MiB; not CSV events")
        if not block:
            if not data:
                return
            continue
        try:
            text = block.decode("utf-8-sig" if first else "utf-8")
        except UnicodeDecodeError as e:
            at = line + block[: e.start].count(b"\n")
            raise DataFileError(
                f"{label}: not UTF-8 text (line {at}, byte {offset + e.start}); a CSV must be UTF-8, a NetCDF file "
                f"NetCDF-4"
            ) from None
        if "\x00" in text:
            raise DataFileError(f"{label}: binary data, not CSV text")
        lines = text.splitlines()
        yield line, lines
        line, offset, first = line + len(lines), offset + cut, False


def _header(label: str, problem: ProblemInfo, row: str, line: int) -> list[str]:
    """The header's column names, checked: the observable, the coordinates, optionally the weight."""
    kind = problem.kind
    coords = ["x"] if problem.event_dims == 1 else ["x", "y"]
    allowed = ["observable", *coords, "weight"]
    header = [h.strip().lower() for h in next(csv.reader([row]), [])]
    unknown = [h for h in header if h not in allowed]
    if unknown:
        raise DataFileError(
            f"{label}: line {line}: unknown column {shown(unknown[0])}; {kind} event columns are "
            f"{', '.join(allowed)} (weight optional)"
        )
    dup = [h for h in header if header.count(h) > 1]
    if dup:
        raise DataFileError(f"{label}: line {line}: column {shown(dup[0])} appears twice")
    missing = [h for h in allowed[:-1] if h not in header]
    if missing:
        raise DataFileError(
            f"{label}: line {line}: the header lacks column(s) {', '.join(missing)}; {kind} "
            f"events need {', '.join(allowed[:-1])} (and optionally weight)"
        )
    return header


def _add_block(
    label: str,
    problem: ProblemInfo,
    header: list[str],
    rows: list[str],
    numbers: list[int],
    parts: dict[str, list[_Part]],
    counts: dict[str, int],
    max_events: int,
) -> None:
    """Parse one block's event lines into ``parts`` (per observable: the values, and the index and line of each event
    outside the problem's domain before widening: only these can lie outside the domain a resolution widens);
    refuse an observable past ``max_events`` at this block."""
    names = problem.observable_names
    coords = ["x"] if problem.event_dims == 1 else ["x", "y"]
    numeric = [(c, header.index(c)) for c in [*coords, "weight"] if c in header]
    parsed = _parse_rows_fast(rows, header, [c for c, _ in numeric], names)
    if parsed is None:  # something is wrong: the line-by-line reader finds the first fault and says where
        parsed = _parse_rows_slowly(
            label, problem.kind, rows, numbers, len(header), header.index("observable"), numeric, names
        )
    per_obs, index = parsed
    lines = np.asarray(numbers, dtype=np.int32 if numbers[-1] < 2**31 else np.int64)
    for n in names:
        k = len(index[n])
        if not k:
            continue
        if counts[n] + k > max_events:
            at = int(lines[index[n][max_events - counts[n]]])
            raise DataFileError(
                f"{label}: observable {n!r} has more than {max_events:,} events, the limit (limits.events), by line "
                f"{at}; a spec may raise limits.events where the machine has the memory"
            )
        values = per_obs[n]
        out = np.zeros(k, dtype=bool)
        for axis, (a, b) in enumerate(problem.domain):
            out |= (values[:, axis] < a) | (values[:, axis] > b)
        i = np.flatnonzero(out)
        parts[n].append((values, counts[n] + i, lines[index[n][i]]))
        counts[n] += k


def _line_of(index: np.ndarray, lines: np.ndarray) -> Callable[[int], str]:
    """Where event ``i`` of an observable is, for messages: its line in the file (``i`` one of ``index``, the events
    outside the unwidened domain, whose ``lines`` were kept)."""
    return lambda i: f"line {lines[np.searchsorted(index, i)]}"


def _parse_rows_slowly(
    label: str,
    kind: str,
    rows: list[str],
    numbers: list[int],
    n_fields: int,
    col_obs: int,
    numeric: list[tuple[str, int]],
    names: tuple[str, ...],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Events per observable ``(N, columns)`` and their row indices, reading line by line (exact messages). Each
    line is one event: a quoted field is never continued on the next line (the csv module would join them)."""
    per_obs: dict[str, list[list[float]]] = {n: [] for n in names}
    rows_of: dict[str, list[int]] = {n: [] for n in names}
    for k, (row, line) in enumerate(zip(rows, numbers)):
        if row.count('"') % 2:
            raise DataFileError(f"{label}: line {line}: a quoted field does not end on its line; one event per line")
        fields = next(csv.reader([row]), [])
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
    if not np.isfinite(values).all():
        return None
    if not np.isin(obs, list(names)).all():
        return None
    index = {n: np.flatnonzero(obs == n) for n in names}
    return {n: values[i] for n, i in index.items()}, index


def parse_cross_sections(
    label: str,
    text: str | None,
    problem: ProblemInfo,
    events: list[np.ndarray],
    weights: list[np.ndarray] | None,
    where: str | None,
    hint: str = "the comment line '# xsec: {example}'",
) -> tuple[np.ndarray, np.ndarray]:
    """The cross sections ``sigma1=12.3±0.1, sigma2=...`` of ``text`` (a CSV's ``# xsec:`` line, a Parquet file's
    ``xsec`` metadata, a ROOT file's ``xsec`` string; ``where`` says which in messages), or, without ``text``
    and for problems without normalisation parameters, the (weighted) event counts ± √Σw², which their fits
    do not use. ``hint`` says where the user puts them (``{example}`` becomes an example)."""
    names = problem.observable_names
    example = ", ".join(f"{o}=<value>±<error>" for o in names)
    hint = hint.format(example=example)
    if text is None:
        if problem.normalisation_params:
            raise DataFileError(
                f"{label}: no cross sections: {problem.kind} needs the integrated cross section of each observable "
                f"to fix its normalisations ({', '.join(problem.normalisation_params)}); add {hint}"
            )
        if weights is None:
            n = np.asarray([len(e) for e in events], dtype=np.float64)
            return n, np.sqrt(n)
        return np.asarray([w.sum() for w in weights]), np.sqrt(np.asarray([(w**2).sum() for w in weights]))
    values: dict[str, tuple[float, float]] = {}
    for item in filter(None, (s.strip() for s in re.split(r"[,;]", text))):
        m = re.match(r"^([^=\s]+)\s*=\s*(.+)$", item)
        parts = _PLUS_MINUS.split(m.group(2).strip()) if m else []
        try:
            value, err = (float(parts[0]), float(parts[1])) if len(parts) == 2 else (None, None)
        except ValueError:
            value, err = None, None
        if m is None or value is None or err is None:
            raise DataFileError(f"{label}: {where}: cannot read cross section {shown(item)}; write {hint}")
        if m.group(1) not in names:
            raise DataFileError(
                f"{label}: {where}: unknown observable {shown(m.group(1))} in xsec; "
                f"{problem.kind} has {', '.join(names)}"
            )
        values[m.group(1)] = (value, err)
    missing = [o for o in names if o not in values]
    if missing:
        raise DataFileError(f"{label}: {where}: no cross section for {', '.join(missing)}; write {hint}")
    xsec = np.asarray([values[o][0] for o in names])
    xsec_err = np.asarray([values[o][1] for o in names])
    check_cross_sections(label, xsec, xsec_err, problem, str(where))
    return xsec, xsec_err


# Checks shared by both formats -------------------------------------------------------------------------
