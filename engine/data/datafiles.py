"""Measured data from a file (NetCDF, CSV, Parquet or ROOT events, optional per-event weights) → ``MeasuredData``.

One reader for uploads (:func:`read_measured`, given the file's bytes) and for the files a spec's
``problem.data`` names (:func:`read_measured_file`, :func:`read_spec_data`): both apply the same checks. The
format is told by the file's first bytes (HDF5's signature: NetCDF-4; ``PAR1``: Parquet; ``root``: ROOT;
anything else is read as CSV text). NetCDF files are opened through :mod:`qcf_studio.engine.data.safe_hdf5` (no external
storage, links or virtual datasets; declared sizes bounded before anything is read), Parquet and ROOT files
through :mod:`qcf_studio.engine.data.parquetfiles` and :mod:`qcf_studio.engine.data.rootfiles` (the optional extra
``qcf-studio[io]``; declared sizes bounded, read in chunks). Every refusal is a :class:`DataFileError` naming
the file and the line, column, branch or variable at fault; no message echoes more than a few characters of
the file.

Formats:

- **NetCDF-4** as ``qcf-studio data`` writes it: ``events`` (observable, event[, coord]) with the problem's
  observable names (and ``coord = x, y`` for 2D events), ``xsec`` and ``xsec_err`` (observable), optionally
  ``weights`` (observable, event), ``counts`` (observable: events of each observable when they differ; the
  rest of its row is padding) and ``params_true`` (param).
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
- **Parquet**: the CSV schema as a table (or the columns ``problem.columns`` names), see
  :mod:`qcf_studio.engine.data.parquetfiles`.
- **ROOT**: a TTree per observable (or the trees and branches ``problem.columns`` names), see
  :mod:`qcf_studio.engine.data.rootfiles`.

Every observable needs at least :data:`MIN_EVENTS` events; observables (data sets) may have different numbers
(see :attr:`MeasuredData.counts`). Weights must be finite with a positive sum per observable; negative weights
(sWeights) are data, and :func:`read_spec_data` refuses them for the methods that cannot use them (the GAN).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from qcf_studio.engine.data.csvfiles import read_csv
from qcf_studio.engine.data.filechecks import MIN_EVENTS, DataFileError
from qcf_studio.engine.data.measured import MeasuredData
from qcf_studio.engine.data.netcdffiles import MAX_DATA_ARRAY_BYTES, read_netcdf
from qcf_studio.engine.data.parquetfiles import PARQUET_SIGNATURE, read_parquet
from qcf_studio.engine.data.rootfiles import ROOT_SIGNATURE, read_root
from qcf_studio.engine.data.safe_hdf5 import HDF5_SIGNATURE
from qcf_studio.engine.problem_catalog import ProblemInfo, problem_info, problem_kinds
from qcf_studio.engine.spec_data import DataColumns
from qcf_studio.engine.specfields import SpecError
from qcf_studio.engine.textlimits import clip, clip_path, shown

if TYPE_CHECKING:
    from qcf_studio.engine.spec import Spec

__all__ = [
    "DataFileError",
    "read_measured",
    "read_measured_file",
    "read_spec_data",
    "check_methods",
    "negative_weights",
    "file_label",
    "MAX_UPLOAD_BYTES",
    "MAX_DATA_ARRAY_BYTES",
    "MAX_EVENTS",
    "MIN_EVENTS",
]

MAX_UPLOAD_BYTES = 50 * 2**20  # a file uploaded in the browser
MAX_EVENTS = 5_000_000  # per observable in a problem.data file (limits.events' default); files of any size
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")
_SIGNATURE_BYTES = max(len(HDF5_SIGNATURE), len(PARQUET_SIGNATURE), len(ROOT_SIGNATURE))


def file_label(name: str) -> str:
    """What messages call a file: its last path component, clipped, control characters escaped."""
    return clip(Path(name.replace("\x00", "")).name or "upload", 80) if name else "upload"


def read_measured(
    name: str,
    content: bytes,
    kind: str,
    max_bytes: int = MAX_UPLOAD_BYTES,
    *,
    columns: Mapping[str, DataColumns] | None = None,
    xsec: Mapping[str, Sequence[float]] | None = None,
    max_events: int = MAX_EVENTS,
) -> MeasuredData:
    """The measured data of problem ``kind`` in the file ``name`` with bytes ``content`` (an upload).

    The format is told by the first bytes (see the module's docstring); ``columns`` and ``xsec`` (the spec's
    ``problem.columns`` and ``problem.xsec``) say where a Parquet or ROOT file keeps what. Raises
    :class:`DataFileError` naming ``name`` and, where it can, the line, column or variable at fault.
    """
    label = file_label(name)
    problem = _problem(label, kind)
    if len(content) > max_bytes:
        raise DataFileError(
            f"{label}: the file has {len(content) / 2**20:.1f} MiB, more than the upload limit of "
            f"{max_bytes / 2**20:.1f} MiB"
        )
    return _read(label, content, content[:_SIGNATURE_BYTES], problem, max_bytes, columns, xsec, max_events)


def read_measured_file(
    path: str | Path,
    kind: str,
    *,
    columns: Mapping[str, DataColumns] | None = None,
    xsec: Mapping[str, Sequence[float]] | None = None,
    max_events: int = MAX_EVENTS,
) -> MeasuredData:
    """The measured data of problem ``kind`` in the file at ``path`` (``problem.data``): the checks of
    :func:`read_measured`. Files of any size, never read into memory whole: at most ``max_events`` events per
    observable, NetCDF, Parquet and ROOT files checked on their declared sizes before any value is read, then
    every format read in chunks, each checked as it arrives."""
    label = clip_path(path, 200)
    problem = _problem(label, kind)
    try:
        with open(path, "rb") as f:
            head = f.read(_SIGNATURE_BYTES)
            if not head.startswith((HDF5_SIGNATURE, PARQUET_SIGNATURE, ROOT_SIGNATURE)):  # text: streamed from f
                return _read(label, f, head, problem, MAX_UPLOAD_BYTES, columns, xsec, max_events)
    except (OSError, ValueError) as e:
        if isinstance(e, DataFileError):
            raise
        raise DataFileError(f"{label}: cannot read ({getattr(e, 'strerror', None) or type(e).__name__})") from None
    # binary formats are opened by their own readers
    return _read(label, Path(path), head, problem, MAX_UPLOAD_BYTES, columns, xsec, max_events)


def _read(
    label: str,
    source: bytes | Path | IO[bytes],
    head: bytes,
    problem: ProblemInfo,
    max_bytes: int,
    columns: Mapping[str, DataColumns] | None,
    xsec: Mapping[str, Sequence[float]] | None,
    max_events: int,
) -> MeasuredData:
    """Dispatch on the file's signature ``head``; ``source`` is the file's bytes (an upload of at most
    ``max_bytes``), a binary format's path, or a text file open past ``head``."""
    if not isinstance(source, (bytes, Path)):
        return _read_text(label, head, source, problem, max_events)
    if head.startswith(PARQUET_SIGNATURE):
        return read_parquet(label, source, problem, columns, xsec, max_events)
    if head.startswith(ROOT_SIGNATURE):
        return read_root(label, source, problem, columns, xsec, max_events)
    for key, given in (("columns", columns), ("xsec", xsec)):
        if given is not None:
            what = "its columns are fixed" if key == "columns" else "it carries its own cross sections"
            kind = "a NetCDF" if head.startswith(HDF5_SIGNATURE) else "a CSV"
            raise DataFileError(
                f"{label} is {kind} file: {what}; problem.{key} is for ROOT and Parquet files", f"problem.{key}"
            )
    if head.startswith(HDF5_SIGNATURE):
        return read_netcdf(label, source, problem, max_bytes, max_events)
    if isinstance(source, Path):  # not reached: text files are passed open
        raise DataFileError(f"{label}: not a data file")
    return _read_text(label, b"", io.BytesIO(source), problem, max_events)


def read_spec_data(spec: Spec) -> MeasuredData:
    """The measured data a spec's ``problem.data`` names (:func:`read_measured_file` with the spec's
    ``problem.columns``, ``problem.xsec`` and ``limits.events``), checked against the spec's methods
    (:func:`check_methods`). What is wrong is a :class:`~qcf_studio.engine.specfields.SpecError` naming the field
    (``problem.data`` for the file itself): ``qcf-studio validate`` and
    :func:`qcf_studio.engine.run.runner.measured_data`
    check a spec's data so, before dispatch."""
    p = spec.problem
    if p.data is None:
        raise SpecError("problem.data", "no file named")
    try:
        data = read_measured_file(p.data, p.kind, columns=p.columns, xsec=p.xsec, max_events=spec.limits.events)
    except DataFileError as e:
        raise SpecError(e.field or "problem.data", str(e)) from None
    check_methods(spec, negative_weights(data))
    return data


def negative_weights(data: MeasuredData) -> str:
    """Where ``data`` have negative weights, in words (``"12 of 1,000 events of 'sigma1'"``); ``""``: nowhere."""
    if not data.negative_weights or data.weights is None:
        return ""
    counts, names = data.event_counts, problem_info(data.kind).observable_names
    below = [int((data.weights[o, : counts[o]] < 0).sum()) for o in range(len(names))]
    return "; ".join(f"{b:,} of {int(c):,} events of {n!r}" for b, c, n in zip(below, counts, names) if b)


def check_methods(spec: Spec, negative: str) -> None:
    """Refuse measured data with negative weights (sWeights; ``negative`` says where, from :func:`negative_weights`)
    for a method of ``spec`` that cannot use them: the GAN.

    The likelihood fit uses them (Σ w log p with sandwich errors, χ² with Σw² variances); the GAN cannot: a real
    event's term −w log D(x) with w < 0 is unbounded below, so its discriminator would learn to drive D to 0 at
    those events instead of telling data from model."""
    if negative and spec.training.method == "gan":
        raise SpecError(
            "training.method",
            f"gan cannot use negative event weights (sWeights), and problem.data {clip_path(spec.problem.data, 80)} "
            f"has them ({clip(negative, 200)}): the discriminator's loss is unbounded below with them. Fit these "
            f"data with training.method mle (weighted likelihood, sandwich errors), or use weights ≥ 0",
        )


def _problem(label: str, kind: str) -> ProblemInfo:
    try:
        return problem_info(kind)
    except KeyError:
        raise DataFileError(
            f"{label}: unknown problem {shown(kind)}; choose one of {', '.join(problem_kinds())}"
        ) from None


def _read_text(label: str, head: bytes, stream: IO[bytes], problem: ProblemInfo, max_events: int) -> MeasuredData:
    """CSV text: ``head`` (what was read to tell the format) and then ``stream``, read in blocks."""
    if not head:
        head = stream.read(_SIGNATURE_BYTES)
    if head.startswith(b"CDF\x01") or head.startswith(b"CDF\x02"):
        raise DataFileError(f"{label}: classic NetCDF-3 files are not read here; write NetCDF-4 (as `qcf-studio data`)")
    if label.lower().endswith(_NETCDF_SUFFIXES) and head.strip():
        raise DataFileError(f"{label}: not a NetCDF-4 file (no HDF5 signature); CSV files should end in .csv")
    return read_csv(label, stream, problem, max_events, prefix=head)
