"""Measured data uploaded in the browser: read with :mod:`qcf_studio.engine.data.datafiles`, saved under the runs
directory.

No Panel here: the dashboard hands over the file's name and bytes, shows :class:`UploadError`'s message
as it is, and saves the result with :func:`save_upload` where a spec's ``problem.data`` can name it.
Uploads are capped in number and total size per directory (:data:`MAX_UPLOADS`,
:data:`MAX_UPLOADS_TOTAL_BYTES`), so that a browser cannot fill the server's disk.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qcf_studio.engine.data.datafiles import MAX_UPLOAD_BYTES, MIN_EVENTS, file_label, read_measured
from qcf_studio.engine.data.datafiles import DataFileError as UploadError
from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.problem_catalog import problem_info
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results.files import write_netcdf_unique
from qcf_studio.engine.safe_yaml import YAMLRefused, load_yaml
from qcf_studio.engine.spec import LimitsSpec, Spec, default_spec
from qcf_studio.engine.spec_data import parse_columns, parse_xsec

__all__ = [
    "UploadError",
    "file_label",
    "read_measured_upload",
    "save_upload",
    "upload_summary",
    "upload_usage",
    "upload_layout",
    "MAX_UPLOAD_BYTES",
    "MIN_EVENTS",
    "MAX_UPLOADS",
    "MAX_UPLOADS_TOTAL_BYTES",
]

MAX_UPLOADS = 200  # files in one uploads directory
MAX_UPLOADS_TOTAL_BYTES = 2**30  # their total size

read_measured_upload = read_measured  # the upload's bytes, as every reader of measured data checks them


def upload_layout(spec: Spec | None, text: str) -> dict[str, Any]:
    """How an upload is read: the problem kind, ``problem.columns``, ``problem.xsec`` and ``limits.events`` of the
    page's spec, as keyword arguments of :func:`read_measured_upload`. While the spec is invalid (columns typed
    before there is a file to name them in ``problem.data``, say) these fields are read from its YAML ``text``
    alone; a :class:`~qcf_studio.engine.specfields.SpecError` names the field when they are wrong."""
    if spec is not None:
        p = spec.problem
        return {"kind": p.kind, "columns": p.columns, "xsec": p.xsec, "max_events": spec.limits.events}
    try:
        raw = load_yaml(text)
    except YAMLRefused:
        raw = None
    problem = raw.get("problem") if isinstance(raw, dict) else None
    problem = problem if isinstance(problem, dict) else {}
    kind = problem.get("kind", default_spec().problem.kind)
    try:
        info = problem_info(kind if isinstance(kind, str) else "")
    except KeyError:
        info = problem_info(default_spec().problem.kind)
    columns, xsec = parse_columns(problem.get("columns"), info), parse_xsec(problem.get("xsec"), info)
    return {"kind": info.kind, "columns": columns, "xsec": xsec, "max_events": LimitsSpec().events}


def upload_usage(directory: Path) -> tuple[int, int]:
    """How many uploads ``directory`` holds and their total size in bytes."""
    files = [p for p in Path(directory).glob("*.nc") if p.is_file()] if Path(directory).is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def save_upload(
    data: MeasuredData,
    directory: Path,
    name: str,
    max_files: int = MAX_UPLOADS,
    max_total_bytes: int = MAX_UPLOADS_TOTAL_BYTES,
) -> Path:
    """Write ``data`` as NetCDF under ``directory`` and return the path for ``problem.data``.

    The file name is ``name``'s stem reduced to letters, digits, ``.``, ``_`` and ``-`` (at most 80
    characters) plus ``.nc``; an existing file is never overwritten (``-2``, ``-3``, ... are appended, and
    the name is claimed atomically). Raises :class:`UploadError` when the directory already holds
    ``max_files`` uploads or ``max_total_bytes``, or when the file cannot be written (disk full).
    """
    directory = Path(directory)
    label = file_label(name)
    count, total = upload_usage(directory)
    if count >= max_files:
        raise UploadError(
            f"{label}: the uploads folder holds {count} files, the most it may; remove some from {directory} first"
        )
    if total + data.events.nbytes > max_total_bytes:
        raise UploadError(
            f"{label}: the uploads folder holds {total / 2**20:,.0f} MiB; this upload would pass its "
            f"limit of {max_total_bytes / 2**20:,.0f} MiB; remove some from {directory} first"
        )
    stem = Path(label).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80] or "upload"
    ds = data.to_xarray()
    ds.attrs["source"] = label
    try:
        return write_netcdf_unique(ds, directory, stem)
    except OSError as e:
        raise UploadError(f"{label}: cannot be saved in {directory}: {e.strerror or e}") from None


def upload_summary(data: MeasuredData) -> str:
    """One line on uploaded data for the page: problem, events per observable, weights, cross sections."""
    problem = get_problem(data.kind)
    xs = ", ".join(f"{n} {v:.4g}±{e:.2g}" for n, v, e in zip(problem.observable_names, data.xsec, data.xsec_err))
    weighted = "unweighted" if data.weights is None else "weighted"
    note = " (negative weights: for training.method mle only)" if data.negative_weights else ""
    counts = data.event_counts
    each = f"{counts[0]:,}" if (counts == counts[0]).all() else "/".join(f"{c:,}" for c in counts)
    return f"{data.kind}: {each} {weighted} events per observable{note}; cross sections {xs}"
