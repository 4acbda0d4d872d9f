"""The runs directory as a catalogue: one :class:`RunInfo` per results file, read from attributes only;
and the one reader of results files (:func:`load_run`) that the views and ``qcf-studio export`` share.

No Panel imports. :func:`list_runs` is cheap enough to poll every few seconds: a file is re-read only
when its (path, mtime, size) changes, and only its attributes and dimension sizes are read, never arrays.
Results files may come from someone else: both readers open them through :mod:`engine.safe_hdf5` (no
external storage or links, sizes bounded), and :func:`load_run` checks every variable the views and
exports use against the results contract (:func:`check_results`) before anything is drawn.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from engine.problems import problem_kinds
from engine.safe_hdf5 import checked_hdf5, open_netcdf
from engine.safe_yaml import MAX_YAML_BYTES, load_yaml
from engine.textlimits import clip, shown

__all__ = ["RunInfo", "NotARunError", "list_runs", "load_run", "read_run_info", "check_results",
           "MAX_RESULTS_BYTES"]

MAX_RESULTS_BYTES = 2**30  # a results file, and what its datasets may declare (a 64-member 2D run: ~30 MiB)
STATUSES = ("completed", "stopped", "failed")


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


def _number(value: Any) -> float:
    try:
        return float(np.asarray(value).item()) if np.asarray(value).size == 1 else float("nan")
    except (TypeError, ValueError):
        return float("nan")


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
        closure = "passed" if _number(attrs["closure_passed"]) == 1 else "FAILED"
    return RunInfo(
        path=path,
        name=path.stem,
        problem=_text(attrs.get("problem", "")),
        method=_text(attrs.get("method", "")),
        status=_text(attrs.get("status", "")),
        wall_seconds=_number(attrs.get("wall_seconds", float("nan"))),
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
    results contract (:func:`check_results`).

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
        raise NotARunError(f"{label}: not a qcf-studio results file: no `spec` attribute or `params_pred` "
                           f"variable{hint}")
    check_results(ds, label)
    return ds


def _dims(two_d: bool) -> dict[str, tuple[str, ...]]:
    q = ("qcf", "x", "y") if two_d else ("qcf", "x")
    h = ("observable", "bin", "bin_y") if two_d else ("observable", "bin")
    return {
        "params_pred": ("member", "param"), "params_pred_std": ("member", "param"),
        "qcf_pred": ("member", *q), "qcf_pred_std": ("member", *q), "hist_data": h, "hist_gen": ("member", *h),
    }


_OPTIONAL_DIMS = {
    "params_true": ("param",), "params_mle": ("param",), "params_mle_err": ("param",),
    "params_ensemble": ("param",), "params_ensemble_err": ("param",), "pull": ("param",),
    "error_ratio": ("param",), "params_history": ("member", "step", "param"), "chi2_ndf": ("member", "observable"),
    "steps_done": ("member",), "resumed_from": ("member",), "comm_seconds": ("member",),
    "xsec_data": ("observable",), "xsec_data_err": ("observable",),
    **{m: ("member", "step") for m in ("loss_g", "loss_d", "d_acc_real", "d_acc_fake", "loss_xsec", "loss_d_xsec",
                                       "nll")},
}
_TEXT_ATTRS = ("spec", "name", "problem", "method", "status", "errors", "uncertainty", "versions")
_NUMBER_ATTRS = ("wall_seconds", "events_per_second")


def check_results(ds: xr.Dataset, label: str) -> None:
    """Raise :class:`NotARunError` naming ``label`` and the variable or attribute when ``ds`` does not have
    the shape of the results contract (design.md, "Results") that the views and exports rely on: every
    variable with its dimensions, numbers where numbers belong, the labels of params, QCFs and observables,
    histogram edges one longer than the bins, at least one member."""

    def refuse(what: str) -> NotARunError:
        return NotARunError(f"{label}: not a results file this version can show: {what}")

    for key in _TEXT_ATTRS:
        if key in ds.attrs and not isinstance(ds.attrs[key], str):
            raise refuse(f"attribute {key!r} is not text")
    if len(ds.attrs["spec"]) > MAX_YAML_BYTES:
        raise refuse(f"attribute 'spec' has more than {MAX_YAML_BYTES:,} characters")
    for key in (*_NUMBER_ATTRS, *(k for k in ds.attrs if k.startswith("closure_"))):
        if key in ds.attrs and math.isnan(_number(ds.attrs[key])) and not _is_nan(ds.attrs[key]):
            raise refuse(f"attribute {shown(key)} is not a number")
    if ds.attrs.get("problem") not in problem_kinds():
        raise refuse(f"problem {shown(ds.attrs.get('problem'))} is not registered here (a user problem: see "
                     f"$QCF_STUDIO_PROBLEMS in the README)")
    if "status" in ds.attrs and ds.attrs["status"] not in STATUSES:
        raise refuse(f"attribute 'status' is {shown(ds.attrs['status'])}, not one of {', '.join(STATUSES)}")
    two_d = "qcf_pred" in ds and "y" in ds["qcf_pred"].dims
    required = _dims(two_d)
    for name, dims in [*required.items(), *_OPTIONAL_DIMS.items(), *_qcf_true(two_d)]:
        if name not in ds:
            if name in required:
                raise refuse(f"variable {name!r} is missing")
            continue
        if ds[name].dims != dims:
            raise refuse(f"variable {name!r} has dimensions {shown(ds[name].dims)}, the contract says {dims}")
        if not np.issubdtype(ds[name].dtype, np.number):
            raise refuse(f"variable {name!r} is not numeric")
    for coord in ("param", "qcf", "observable", "x", *(("y",) if two_d else ())):
        if coord not in ds.coords or ds[coord].ndim != 1:
            raise refuse(f"coordinate {coord!r} is missing")
    for coord in ("x", "y", "step") if two_d else ("x", "step"):
        if coord in ds.coords and not np.issubdtype(ds[coord].dtype, np.number):
            raise refuse(f"coordinate {coord!r} is not numeric")
    if ds.sizes["member"] < 1:
        raise refuse("it has no member")
    edges = ds.get("bin_edges")
    edge_dims = ("observable", "coord", "bin_edge") if two_d else ("observable", "bin_edge")
    if edges is None or edges.dims != edge_dims or ds.sizes["bin_edge"] != ds.sizes["bin"] + 1:
        raise refuse(f"variable 'bin_edges' must have dimensions {edge_dims} with one edge more than bins")
    if two_d and (ds.sizes["coord"] != 2 or ds.sizes.get("bin_y") != ds.sizes["bin"]):
        raise refuse("2D histograms need coord = x, y and as many y bins as x bins")


def _qcf_true(two_d: bool) -> list[tuple[str, tuple[str, ...]]]:
    return [("qcf_true", ("qcf", "x", "y") if two_d else ("qcf", "x"))]


def _is_nan(value: Any) -> bool:
    try:
        return bool(np.isnan(float(np.asarray(value).item())))
    except (TypeError, ValueError):
        return False
