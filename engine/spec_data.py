"""The spec's fields about a measured-data file's layout: ``problem.columns`` (where each observable's events are
in a ROOT or Parquet file) and ``problem.xsec`` (the integrated cross sections such files do not carry).

```yaml
problem:
  data: measured.root
  columns:                          # ROOT / Parquet only; null: the standard layout (docs/spec.md)
    sigma1: {tree: proton, x: xB, weight: sw}
    sigma2: {tree: neutron, x: xB, weight: sw}
  xsec: {sigma1: [12.3, 0.1], sigma2: [4.56, 0.05]}   # value and error per observable
```

Checked here as far as the spec alone allows (names, types, every observable present); whether the file has
those trees and columns is checked where it is read (:mod:`qcf_studio.engine.data.datafiles`). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import with_config

from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.specfields import SECTION_CONFIG, SpecError, Text, fill_section, number
from qcf_studio.engine.textlimits import shown

__all__ = ["DataColumns", "parse_columns", "parse_xsec", "MAX_COLUMN_NAME_CHARS"]

MAX_COLUMN_NAME_CHARS = 200  # a tree, branch or column name


@with_config(SECTION_CONFIG)
@dataclass
class DataColumns:
    """Where one observable's events are in a ROOT or Parquet file."""

    tree: Text | None = None
    """ROOT: the TTree that holds them (default: the tree named after the observable); Parquet: none."""
    x: Text = "x"
    """The branch (ROOT) or column (Parquet) of the events' x."""
    y: Text | None = None
    """2D problems: the branch or column of y (default 'y'); 1D problems: none."""
    weight: Text | None = None
    """The branch or column of the per-event weights (negative weights: only for method mle); null: unweighted."""


def _name(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(path, f"expected a tree, branch or column name, got {shown(value)}")
    if len(value) > MAX_COLUMN_NAME_CHARS or "\x00" in value:
        raise SpecError(path, f"not a usable name ({len(value):,} characters; at most {MAX_COLUMN_NAME_CHARS}, no NUL)")
    return value


def _per_observable(raw: Any, key: str, what: str, info: ProblemInfo) -> dict[str, Any]:
    """The mapping ``problem.<key>`` with one entry for each of the problem's observables."""
    names = info.observable_names
    if not isinstance(raw, dict):
        raise SpecError(f"problem.{key}", f"expected a mapping of observable: {what}, got {shown(raw)}")
    for name in raw:
        if name not in names:
            raise SpecError(f"problem.{key}.{name}", f"unknown observable; {info.kind} has {', '.join(names)}")
    missing = [n for n in names if n not in raw]
    if missing:
        raise SpecError(f"problem.{key}", f"needs every observable of {info.kind}; {', '.join(missing)} missing")
    return {n: raw[n] for n in names}


def parse_columns(raw: Any, info: ProblemInfo) -> dict[str, DataColumns] | None:
    """``problem.columns``: a :class:`DataColumns` per observable, or ``None`` (the file's standard layout)."""
    if raw is None:
        return None
    out = {}
    for obs, entry in _per_observable(raw, "columns", "{tree, x, y, weight}", info).items():
        path = f"problem.columns.{obs}"
        cols: DataColumns = fill_section(path, DataColumns, entry)
        for key in ("tree", "x", "y", "weight"):
            if getattr(cols, key) is not None:
                _name(f"{path}.{key}", getattr(cols, key))
        if info.event_dims == 1 and cols.y is not None:
            raise SpecError(f"{path}.y", f"{info.kind} events have one coordinate (x); remove y")
        if info.event_dims == 2 and cols.y is None:
            cols.y = "y"
        out[obs] = cols
    return out


def parse_xsec(raw: Any, info: ProblemInfo) -> dict[str, list[float]] | None:
    """``problem.xsec``: ``[value, error]`` of each observable's integrated cross section, or ``None``."""
    if raw is None:
        return None
    out = {}
    for obs, pair in _per_observable(raw, "xsec", "[value, error]", info).items():
        path = f"problem.xsec.{obs}"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(path, f"expected [value, error], got {shown(pair)}")
        value, error = number(path, pair[0]), number(path, pair[1])
        if not (error > 0 and math.isfinite(error)):
            raise SpecError(path, f"the error must be positive, got {error}")
        out[obs] = [value, error]
    return out
