"""What the chunked readers of columnar files (:mod:`qcf_studio.engine.data.rootfiles`,
:mod:`qcf_studio.engine.data.parquetfiles`) share:
the optional packages behind them, an observable's events gathered chunk by chunk with every chunk checked as it
arrives (finite, inside the domain, not past the event limit), the cross sections from the spec or the file, and
the :class:`~qcf_studio.engine.data.measured.MeasuredData` they make.

Messages name the file, the observable and the column (branch) at fault, and where (row or entry); they show at
most a clipped name from the file, never its values beyond the one number at fault.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from qcf_studio.engine.data.csvfiles import parse_cross_sections
from qcf_studio.engine.data.filechecks import DataFileError, check_counts, check_cross_sections, check_domain
from qcf_studio.engine.data.measured import MeasuredData
from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.spec_data import DataColumns
from qcf_studio.engine.textlimits import clip, shown

__all__ = ["optional_module", "Gathered", "measured_from", "standard_columns", "quoted", "XSEC_HINT"]

# Where cross sections go for files that have no place of their own for them.
XSEC_HINT = (
    "problem.xsec to the spec ({{sigma1: [value, error], ...}}), or the text '{example}' to the file "
    "(Parquet: key-value metadata 'xsec'; ROOT: a TObjString named xsec)"
)


def optional_module(name: str, label: str, what: str) -> ModuleType:
    """``import name``, or a :class:`DataFileError` saying which extra to install (never a traceback)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataFileError(
            f"{label}: reading {what} files needs the package {name}: install qcf-studio[io] "
            f"(pip install -e '.[io]', or pip install {name})"
        ) from None


def quoted(name: str) -> str:
    """A name from a spec or a file, as messages show it."""
    return shown(clip(name, 80))


@dataclass
class Gathered:
    """One observable's events ``(n, D)`` and weights, gathered chunk by chunk (:meth:`add`)."""

    label: str
    problem: ProblemInfo
    observable: str
    columns: Sequence[str]  # the coordinates' columns (or branches), as messages name them
    weight: str | None
    resolution: float
    max_events: int
    where: str = "row"  # "row" (Parquet) or "entry" (ROOT)
    column: str = "column"  # how messages name a column: "column" (Parquet) or "tree 't', branch" (ROOT)
    events: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add(self, coords: Sequence[np.ndarray], weight: np.ndarray | None, rows: int | np.ndarray) -> None:
        """Check and keep one chunk: ``coords`` one array per coordinate; ``rows`` the chunk's first row (its rows
        in order) or the row of each of its events, for messages."""
        n = len(coords[0])

        def at(i: int) -> str:
            return f"{self.where} {rows + i if isinstance(rows, int) else int(rows[i])}"

        if self.count + n > self.max_events:
            raise DataFileError(
                f"{self.label}: observable {self.observable!r} has more than {self.max_events:,} events, the "
                f"limit (limits.events); a spec may raise limits.events where the machine has the memory"
            )
        arrays = [*coords, *([weight] if weight is not None else [])]
        names = [*self.columns, *([self.weight] if self.weight is not None else [])]
        for values, name in zip(arrays, names):
            bad = ~np.isfinite(values)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataFileError(
                    f"{self.label}: {self.column} {quoted(name)} of observable {self.observable!r}, {at(i)}: "
                    f"not a finite number ({values[i]}; missing values count as such)"
                )
        events = np.stack([np.asarray(c, dtype=np.float64) for c in coords], axis=-1)
        check_domain(self.label, self.problem, self.observable, events, self.resolution, at)
        self.events.append(events)
        if weight is not None:
            self.weights.append(np.asarray(weight, dtype=np.float64))
        self.count += n

    def check_weight_sum(self) -> None:
        """Negative weights are data; weights whose sum is not positive are not."""
        if self.weight is None:
            return
        total = sum(float(w.sum()) for w in self.weights)
        if not total > 0:
            what = "are all zero" if not any(w.any() for w in self.weights) else f"sum to {total:.6g}, not above 0"
            column = f"{self.column} {quoted(self.weight)}"
            raise DataFileError(f"{self.label}: {column}: the weights of observable {self.observable!r} {what}")

    def move_into(self, events: np.ndarray, weights: np.ndarray | None) -> None:
        """Copy the chunks into row ``events (n, D)`` (``weights (n,)``: 1 without a weight column) and let them go:
        the file's values are held twice at most one chunk at a time."""
        k = 0
        while self.events:
            chunk = self.events.pop(0)
            events[k : k + len(chunk)] = chunk
            if weights is not None:
                weights[k : k + len(chunk)] = self.weights.pop(0) if self.weight is not None else 1.0
            k += len(chunk)


def measured_from(
    label: str,
    problem: ProblemInfo,
    gathered: Sequence[Gathered],
    spec_xsec: Mapping[str, Sequence[float]] | None,
    file_xsec: str | None,
) -> MeasuredData:
    """The gathered observables as measured data (each with at least the minimum number of events; an observable
    without a weight column has weight 1 when others have one). The cross sections are the spec's
    ``problem.xsec`` if given, else the file's ``xsec`` text (CSV's syntax), else (problems without
    normalisation parameters only) the weighted event counts."""
    check_counts(label, {g.observable: g.count for g in gathered})
    for g in gathered:
        g.check_weight_sum()
    counts = np.asarray([g.count for g in gathered], dtype=np.int64)
    n, d = int(counts.max()), len(gathered[0].columns)
    table = np.empty((len(gathered), n, d))
    w = np.zeros((len(gathered), n)) if any(g.weight is not None for g in gathered) else None
    for o, g in enumerate(gathered):
        g.move_into(table[o], None if w is None else w[o])
        table[o, counts[o] :] = table[o, 0]  # padding: the first event (see MeasuredData.counts)
    events = [table[o, :c] for o, c in enumerate(counts)]
    weights = None if w is None else [w[o, :c] for o, c in enumerate(counts)]
    if spec_xsec is not None:
        xsec = np.asarray([spec_xsec[n][0] for n in problem.observable_names], dtype=np.float64)
        err = np.asarray([spec_xsec[n][1] for n in problem.observable_names], dtype=np.float64)
        check_cross_sections(label, xsec, err, problem, "problem.xsec")
    else:
        xsec, err = parse_cross_sections(label, file_xsec, problem, events, weights, "the file's 'xsec'", XSEC_HINT)
    try:
        return MeasuredData(problem.kind, table, xsec, err, None, w, counts)
    except ValueError as e:
        raise DataFileError(f"{label}: {e}") from None


def standard_columns(problem: ProblemInfo, has_weight: bool) -> DataColumns:
    """The standard layout's columns of an observable: ``x`` (``y``) and, if present, ``weight``."""
    return DataColumns(None, "x", "y" if problem.event_dims == 2 else None, "weight" if has_weight else None)
