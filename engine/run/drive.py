"""One run from start to its results, as ``qcf-studio run``, the dashboard and the Python API drive it: submit the
members (:func:`qcf_studio.engine.run.distributed.start_run`), collect what they return, build the results Dataset
(:func:`qcf_studio.engine.results.build_results`: :func:`run_results`) and save it under a new name
(:func:`qcf_studio.engine.results.files.save_run`: :func:`run_to_file`).

What differs between the two is passed in: where the members' reports go (a progress bar, the dashboard's
live view) and how the run is waited for and stopped (the command line stops it on a signal; the dashboard
keeps the handle and stops it from another thread).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import xarray as xr

from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.gan.trainer import MemberResult
from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.files import SavedRun, save_run
from qcf_studio.engine.run.distributed import RunHandle, start_run
from qcf_studio.engine.run.runner import run_name
from qcf_studio.engine.run.sinks import MetricsSink
from qcf_studio.engine.spec import Spec

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["run_results", "run_to_file"]


def _wait(handle: RunHandle) -> list[MemberResult]:
    return handle.results()


def run_results(
    client: Client,
    spec: Spec,
    data: MeasuredData,
    sink: MetricsSink | None = None,
    started: Callable[[RunHandle], None] | None = None,
    collect: Callable[[RunHandle], list[MemberResult]] = _wait,
) -> xr.Dataset:
    """Train ``spec`` on ``data`` on ``client``'s cluster; the results Dataset, not saved (see :func:`run_to_file`
    for the arguments). Raises ``ValueError`` before anything is submitted when the cluster cannot host the spec."""
    handle = start_run(client, spec, data, sink=sink)
    if started is not None:
        started(handle)
    members = collect(handle)
    return build_results(spec, data, members, handle.wall_seconds, handle.reference())


def run_to_file(
    client: Client,
    spec: Spec,
    data: MeasuredData,
    out_dir: str | Path,
    sink: MetricsSink | None = None,
    started: Callable[[RunHandle], None] | None = None,
    collect: Callable[[RunHandle], list[MemberResult]] = _wait,
) -> tuple[xr.Dataset, SavedRun]:
    """Train ``spec`` on ``data`` on ``client``'s cluster and save its results as ``out_dir/<run name>.nc``.

    Arguments:
        sink: receives the members' metrics and snapshots as they arrive.
        started: called with the run's :class:`~qcf_studio.engine.run.distributed.RunHandle` once its members are
        submitted
            (to stop it from elsewhere with :meth:`~qcf_studio.engine.run.distributed.RunHandle.stop`).
        collect: waits for the members and returns their results (default: until every member returns);
            a caller that stops the run on some event waits here, stops it and collects again.

    Returns the results Dataset and where it was saved (:class:`~qcf_studio.engine.results.files.SavedRun`: never raises
    for
    I/O; a run that cannot be written to ``out_dir`` is rescued elsewhere or reported lost). Raises
    ``ValueError`` before anything is submitted when the cluster cannot host the spec.
    """
    ds = run_results(client, spec, data, sink, started, collect)
    return ds, save_run(ds, out_dir, run_name(spec))  # never overwrites; rescued if it must be
