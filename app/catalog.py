"""The runs directory as a catalogue: one :class:`RunInfo` per results file, read from attributes only;
and the one reader of results files (:func:`load_run`) that the views and ``qcf-studio export`` share.

No Panel imports. :func:`list_runs` is cheap enough to poll every few seconds: a file is re-read only
when its (path, mtime, size) changes, and only its attributes and dimension sizes are read, never arrays.
Results files may come from someone else: both readers open them through :mod:`qcf_studio.engine.data.safe_hdf5` (no
external storage or links, sizes bounded), and :func:`load_run` checks every variable the views and
exports use against the results contract (:func:`qcf_studio.engine.results.check_results`) before anything is drawn.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from qcf_studio.engine.data.safe_hdf5 import checked_hdf5, open_netcdf
from qcf_studio.engine.results import ResultsContractError, attribute_number, check_results
from qcf_studio.engine.safe_yaml import load_yaml
from qcf_studio.engine.textlimits import clip

__all__ = ["RunInfo", "NotARunError", "list_runs", "load_run", "read_run_info", "MAX_RESULTS_BYTES"]

MAX_RESULTS_BYTES = 2**30  # a results file, and what its datasets may declare (a 64-member 2D run: ~30 MiB)


class NotARunError(ValueError):
    """A file that is not a qcf-studio results file (or cannot be read as one)."""


@dataclass(frozen=True)
class RunInfo:
    """What the runs browser shows about one results file.

    ``closure`` is ``"passed"``, ``"FAILED"`` or ``"n/a"`` (no truth, so no closure test); ``error`` is
    non-empty when the file could not be read as a qcf-studio result (then the other fields are blanks).
    """

    path: Path
    name: str
    problem: str = ""
    method: str = ""
    status: str = ""
    wall_seconds: float = float("nan")
    modified: datetime = datetime.fromtimestamp(0)
    members: int = 0
    mode: str = "ensemble"
    closure: str = "n/a"
    error: str = ""


def _decoded(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _text(value: Any, limit: int = 80) -> str:
    """An attribute as text for a table cell: decoded, clipped (never HTML: the table shows plain text)."""
    return clip(_decoded(value), limit)


def _cluster_mode(spec_text: str) -> str:
    try:
        spec = load_yaml(spec_text) or {}
        return _text((spec.get("cluster") or {}).get("mode", "ensemble"), 20)
    except (ValueError, AttributeError):
        return "ensemble"


def read_run_info(path: Path) -> RunInfo:
    """The :class:`RunInfo` of one file (attributes and dimension sizes only); never raises."""
    path = Path(path)
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime)
    try:
        with checked_hdf5(path, path.name, max_file_bytes=MAX_RESULTS_BYTES, max_data_bytes=MAX_RESULTS_BYTES) as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            if "spec" not in attrs or "params_pred" not in f:
                raise NotARunError("no 'spec' attribute or 'params_pred' variable")
            members = int(f["member"].shape[0]) if "member" in f and f["member"].ndim == 1 else 0
    except Exception as e:  # a foreign or broken file is listed, not fatal
        return RunInfo(path=path, name=path.stem, modified=modified, error=clip(f"{type(e).__name__}: {e}", 200))
    closure = "n/a"
    if "closure_passed" in attrs:
        closure = "passed" if attribute_number(attrs["closure_passed"]) == 1 else "FAILED"
    return RunInfo(
        path=path,
        name=path.stem,
        problem=_text(attrs.get("problem", "")),
        method=_text(attrs.get("method", "")),
        status=_text(attrs.get("status", "")),
        wall_seconds=attribute_number(attrs.get("wall_seconds", float("nan"))),
        modified=modified,
        members=members,
        mode=_cluster_mode(_decoded(attrs["spec"])),
        closure=closure,
    )


_cache: dict[Path, tuple[tuple[float, int], RunInfo]] = {}  # path -> ((mtime_ns, size), info)
_cache_lock = threading.Lock()  # several browser sessions poll the same directory


def _is_temporary(path: Path) -> bool:
    # write_netcdf_atomic writes ".<stem>-XXXX.nc.part" beside the final file, then renames it.
    return path.name.startswith(".") or path.name.endswith(".part")


def list_runs(runs_dir: str | Path) -> list[RunInfo]:
    """Every ``*.nc`` file in ``runs_dir`` (not its subdirectories), newest first.

    Temporary files of runs being written are skipped; unreadable files are listed with ``error`` set.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    seen = set()
    for path in runs_dir.glob("*.nc"):
        if _is_temporary(path) or not path.is_file():
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed between listing and looking
            continue
        key = (stat.st_mtime_ns, stat.st_size)
        seen.add(path)
        with _cache_lock:
            cached = _cache.get(path)
        if cached is not None and cached[0] == key:
            info = cached[1]
        else:
            info = read_run_info(path)
            with _cache_lock:
                _cache[path] = (key, info)
        out.append(info)
    with _cache_lock:  # forget files that are gone, so the cache stays as large as the directory
        for path in [p for p in _cache if p.parent == runs_dir and p not in seen]:
            del _cache[path]
    out.sort(key=lambda r: (r.modified, r.name), reverse=True)
    return out


def load_run(path: str | Path) -> xr.Dataset:
    """The results Dataset of ``path``, loaded into memory with the file closed and checked against the
    results contract (:func:`qcf_studio.engine.results.check_results`).

    Raises ``FileNotFoundError`` for a missing file and :class:`NotARunError` (a ``ValueError``) naming the
    file when it is not a qcf-studio results file, or one this version cannot show.
    """
    path = Path(path)
    label = clip(str(path), 200)
    if not path.is_file():
        raise FileNotFoundError(f"{label}: no such file")
    try:
        ds = open_netcdf(path, label, max_file_bytes=MAX_RESULTS_BYTES, max_data_bytes=MAX_RESULTS_BYTES)
    except (ValueError, OSError) as e:
        raise NotARunError(f"cannot be read as a qcf-studio results file: {e}") from None
    if "spec" not in ds.attrs or "params_pred" not in ds:
        hint = " (it looks like pseudo-data from `qcf-studio data`)" if "events" in ds else ""
        raise NotARunError(
            f"{label}: not a qcf-studio results file: no `spec` attribute or `params_pred` variable{hint}"
        )
    try:
        check_results(ds, label)
    except ResultsContractError as e:
        raise NotARunError(str(e)) from None
    return ds
