"""Measured events from Parquet files (pyarrow, the optional extra ``qcf-studio[io]``), read row group by row group.

Two layouts:

- **standard** (``problem.columns`` null): a long table as the CSV schema, one event per row: ``observable``
  (text: the problem's observable names), ``x`` (``x, y`` for 2D problems) and optionally ``weight``; the
  observables may have different numbers of rows. Other columns are refused (a misspelt ``weight`` would
  otherwise leave the data unweighted), except pandas' index columns.
- **mapped** (``problem.columns``): a wide table, one row holding an event of every observable, each
  observable's ``x`` (``y``, ``weight``) in the columns the spec names.

The cross sections are ``problem.xsec`` or the file's key-value metadata ``xsec`` (CSV's syntax,
``sigma1=12.3±0.1, sigma2=4.56±0.05``); metadata ``resolution`` plays CSV's ``# resolution:``. Before any value is
read the schema is checked (every column there, numbers where numbers belong) and the declared sizes are
bounded: rows against ``limits.events``, each row group's uncompressed columns against
:data:`MAX_ROW_GROUP_BYTES`. Then row groups are read one at a time and each is checked as it arrives
(:class:`~qcf_studio.engine.data.tables.Gathered`), so a file of any size is read in bounded memory, or refused at the
first fault with the file, the column and the row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcf_studio.engine.data.filechecks import DataFileError, file_resolution
from qcf_studio.engine.data.measured import MeasuredData
from qcf_studio.engine.data.tables import Gathered, measured_from, optional_module, quoted, standard_columns
from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.spec_data import DataColumns
from qcf_studio.engine.textlimits import clip, shown

__all__ = ["read_parquet", "PARQUET_SIGNATURE", "MAX_ROW_GROUP_BYTES", "file_setting"]

PARQUET_SIGNATURE = b"PAR1"
MAX_ROW_GROUP_BYTES = 2**30  # uncompressed, of the columns read: what one read may take in memory
_BATCH_ROWS = 1 << 20


def file_setting(label: str, name: str, value: bytes | str | None) -> str | None:
    """A file's ``xsec`` or ``resolution`` text, checked to be short UTF-8 text."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataFileError(f"{label}: the file's {name!r} is not UTF-8 text") from None
    if len(value) > 10_000:
        raise DataFileError(f"{label}: the file's {name!r} has {len(value):,} characters; at most 10,000")
    return value


def _numeric(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def _text(pa: Any, t: Any) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _describe(pa: Any, t: Any) -> str:
    if _text(pa, t):
        return "text"
    if pa.types.is_boolean(t):
        return "true/false values"
    return f"values of type {clip(str(t), 40)}"


def read_parquet(
    label: str,
    source: bytes | Path,
    problem: ProblemInfo,
    columns: Mapping[str, DataColumns] | None,
    xsec: Mapping[str, Sequence[float]] | None,
    max_events: int,
) -> MeasuredData:
    """The measured data of ``problem`` in the Parquet file ``source`` (its bytes, or a path read in chunks)."""
    pa = optional_module("pyarrow", label, "Parquet")
    pq = optional_module("pyarrow.parquet", label, "Parquet")
    try:
        f = pq.ParquetFile(pa.BufferReader(source) if isinstance(source, bytes) else str(source))
        schema, meta = f.schema_arrow, f.metadata
    except Exception as e:  # noqa: BLE001 (pyarrow's errors for a damaged file vary)
        raise DataFileError(
            f"{label}: not a readable Parquet file (a damaged or truncated file? {type(e).__name__})"
        ) from None
    kv = schema.metadata or {}
    file_xsec = file_setting(label, "xsec", kv.get(b"xsec"))
    resolution = file_resolution(label, file_setting(label, "resolution", kv.get(b"resolution")))
    names = problem.observable_names
    present = list(schema.names)
    long = columns is None
    layout: Mapping[str, DataColumns]
    if columns is None:
        coords = ["x"] if problem.event_dims == 1 else ["x", "y"]
        allowed = ["observable", *coords, "weight"]
        unknown = [c for c in present if c not in allowed and not c.startswith("__index_level_")]
        if unknown:
            raise DataFileError(
                f"{label}: unknown column {quoted(unknown[0])}; {problem.kind} event columns are "
                f"{', '.join(allowed)} (weight optional), or name the columns in problem.columns"
            )
        layout = {n: standard_columns(problem, "weight" in present) for n in names}
        needed = ["observable", *coords, *(["weight"] if "weight" in present else [])]
    else:
        layout = columns
        for n, c in columns.items():
            if c.tree is not None:
                raise DataFileError(f"{label}: a Parquet file has no trees; remove tree", f"problem.columns.{n}.tree")
        needed = list(dict.fromkeys(v for c in columns.values() for v in (c.x, c.y, c.weight) if v is not None))
    for col in needed:
        if col not in present:
            field = (
                None if long else next(f"problem.columns.{n}" for n, c in layout.items() if col in (c.x, c.y, c.weight))
            )
            raise DataFileError(f"{label}: no column {quoted(col)} (columns: {clip(', '.join(present))})", field)
        t = schema.field(col).type
        ok = _text(pa, t) if col == "observable" and long else _numeric(pa, t)
        if not ok:
            want = "text (observable names)" if col == "observable" and long else "numbers"
            raise DataFileError(f"{label}: column {quoted(col)} holds {_describe(pa, t)}, not {want}")
    rows = meta.num_rows
    if rows > max_events * (len(names) if long else 1):
        raise DataFileError(
            f"{label}: {rows:,} rows, more than limits.events ({max_events:,} events per observable) allows; "
            f"a spec may raise limits.events where the machine has the memory"
        )
    indices = [schema.get_field_index(c) for c in needed]
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        size = sum(group.column(i).total_uncompressed_size for i in indices)
        if size > MAX_ROW_GROUP_BYTES:
            raise DataFileError(
                f"{label}: row group {g} declares {size / 2**20:,.0f} MiB of uncompressed data, more than "
                f"{MAX_ROW_GROUP_BYTES / 2**20:,.0f} MiB; write smaller row groups"
            )
    gathered = {
        n: Gathered(label, problem, n, [c.x, *([c.y] if c.y else [])], c.weight, resolution, max_events)
        for n, c in layout.items()
    }
    try:
        batches = f.iter_batches(batch_size=_BATCH_ROWS, columns=needed)
        first = 0
        for batch in batches:
            _add_batch(pa, label, batch, first, gathered, layout, long, names)
            first += batch.num_rows
    except DataFileError:
        raise
    except Exception as e:  # noqa: BLE001 (a damaged page, a bad compression stream)
        raise DataFileError(
            f"{label}: cannot be read past row {first:,} (a damaged or truncated file? {type(e).__name__})"
        ) from None
    return measured_from(label, problem, list(gathered.values()), xsec, file_xsec)


def _values(batch: Any, name: str) -> np.ndarray:
    """A numeric column of ``batch`` as float64 (missing values as NaN)."""
    return np.asarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _add_batch(
    pa: Any,
    label: str,
    batch: Any,
    first: int,
    gathered: dict[str, Gathered],
    columns: Mapping[str, DataColumns],
    long: bool,
    names: tuple[str, ...],
) -> None:
    if not long:
        for n, c in columns.items():
            coords = [_values(batch, c.x), *([_values(batch, c.y)] if c.y else [])]
            gathered[n].add(coords, _values(batch, c.weight) if c.weight else None, first)
        return
    pc = optional_module("pyarrow.compute", label, "Parquet")
    obs = batch.column("observable")
    if pa.types.is_dictionary(obs.type):
        obs = obs.dictionary_decode()
    codes = pc.index_in(obs, value_set=pa.array(list(names), type=obs.type)).fill_null(-1).to_numpy()
    if (codes < 0).any():
        i = int(np.argmax(codes < 0))
        value = obs[i].as_py()
        what = "a missing observable" if value is None else f"unknown observable {shown(value)}"
        raise DataFileError(
            f"{label}: column 'observable', row {first + i}: {what}; the observables are {', '.join(names)}"
        )
    needed = dict.fromkeys(v for c in columns.values() for v in (c.x, c.y, c.weight) if v is not None)
    values = {name: _values(batch, name) for name in needed}  # each column converted once per batch
    for o, n in enumerate(names):
        c = columns[n]
        rows = np.flatnonzero(codes == o)
        if not len(rows):
            continue
        coords = [values[c.x][rows], *([values[c.y][rows]] if c.y else [])]
        gathered[n].add(coords, values[c.weight][rows] if c.weight else None, rows + first)
