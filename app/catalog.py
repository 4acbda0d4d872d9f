"""The runs directory as a catalogue: one :class:`RunInfo` per results file, read from attributes only.

No Panel imports. :func:`list_runs` is cheap enough to poll every few seconds: a file is re-read only
when its (path, mtime, size) changes, and only its attributes and dimension sizes are read, never arrays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import h5netcdf
import xarray as xr
import yaml

__all__ = ["RunInfo", "NotARunError", "list_runs", "load_run", "read_run_info"]


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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cluster_mode(spec_text: str) -> str:
    try:
        spec = yaml.safe_load(spec_text) or {}
        return str((spec.get("cluster") or {}).get("mode", "ensemble"))
    except (yaml.YAMLError, AttributeError):
        return "ensemble"


def read_run_info(path: Path) -> RunInfo:
    """The :class:`RunInfo` of one file (attributes and dimension sizes only); never raises."""
    path = Path(path)
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime)
    try:
        with h5netcdf.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            if "spec" not in attrs or "params_pred" not in f.variables:
                raise NotARunError("no 'spec' attribute or 'params_pred' variable")
            members = int(f.dimensions["member"].size) if "member" in f.dimensions else 0
    except Exception as e:  # a foreign or broken file is listed, not fatal
        return RunInfo(path=path, name=path.stem, modified=modified, error=f"{type(e).__name__}: {e}")
    spec_text = _text(attrs["spec"])
    closure = "n/a"
    if "closure_passed" in attrs:
        closure = "passed" if int(attrs["closure_passed"]) else "FAILED"
    return RunInfo(
        path=path,
        name=path.stem,
        problem=_text(attrs.get("problem", "")),
        method=_text(attrs.get("method", "")),
        status=_text(attrs.get("status", "")),
        wall_seconds=float(attrs.get("wall_seconds", float("nan"))),
        modified=modified,
        members=members,
        mode=_cluster_mode(spec_text),
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
    """The results Dataset of ``path``, loaded into memory with the file closed.

    Raises :class:`NotARunError` naming the file when it is not a qcf-studio results file.
    """
    path = Path(path)
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            if "spec" not in ds.attrs or "params_pred" not in ds:
                raise NotARunError(f"{path}: not a qcf-studio results file (needs attribute 'spec' and "
                                   "variable 'params_pred')")
            return ds.load()
    except NotARunError:
        raise
    except Exception as e:
        raise NotARunError(f"{path}: cannot be read as a qcf-studio results file ({type(e).__name__}: {e})") from e
