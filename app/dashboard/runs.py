"""Run control shared by every browser session: start, stop, live metrics, saving results.

No Panel imports: the dashboard polls :class:`LiveRun` for what arrived since it last looked
(pull-based streaming), so any number of sessions can watch one run.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr
from distributed import Client

from qcf_studio.engine.data.datafiles import DataFileError, check_methods, negative_weights, read_measured_file
from qcf_studio.engine.data.histograms import data_histograms
from qcf_studio.engine.data.marginals import marginal_x
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results.files import remove_stale_parts
from qcf_studio.engine.run.distributed import RunHandle
from qcf_studio.engine.run.drive import run_results, run_to_file
from qcf_studio.engine.run.runner import measured_data
from qcf_studio.engine.spec import Spec, SpecError

__all__ = ["LiveRun", "RunManager", "RunBusyError", "drive"]

MAX_METRICS = 50_000  # metric messages kept per run (bounded memory for long runs)
_CHECKED_FILES = 32  # data files whose check result is remembered (the page validates on every edit)


class RunBusyError(RuntimeError):
    pass


@dataclass
class LiveRun:
    """State of one run as the dashboard sees it."""

    spec: Spec
    status: str = "starting"  # starting | running | stopping | completed | stopped | failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {"member", "rank", "step", **metrics}
    dropped: int = 0  # metric messages dropped from the front (bounded buffer)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)  # member -> latest snapshot
    snapshot_version: int = 0
    steps: dict[int, int] = field(default_factory=dict)  # member -> last step reported
    result_path: Path | None = None
    error: str = ""
    closure: dict[str, Any] = field(default_factory=dict)
    hist_data: dict[str, tuple[Any, Any]] | None = None  # observable -> (edges, density) of the measured data
    lock: threading.Lock = field(default_factory=threading.Lock)
    handle: RunHandle | None = None
    result: xr.Dataset | None = None  # the results, once the run has ended

    @property
    def total_steps(self) -> int:
        return self.spec.training.steps * self.spec.ensemble.members

    @property
    def done_steps(self) -> int:
        return sum(self.steps.values())

    def eta_seconds(self) -> float | None:
        done = self.done_steps
        if done == 0 or self.status != "running":
            return None
        elapsed = time.time() - self.started
        return elapsed * (self.total_steps - done) / done

    # MetricsSink: the worker's reports, replayed from the Dask event stream.
    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        with self.lock:
            self.status = "running" if self.status == "starting" else self.status
            self.steps[member] = step
            self._append({"member": member, "rank": 0, "step": step, **metrics})

    def log_rank_metrics(self, member: int, rank: int, step: int, metrics: dict[str, float]) -> None:
        """A data-parallel rank other than 0 (its own discriminator's losses); progress counts rank 0 only."""
        with self.lock:
            self._append({"member": member, "rank": rank, "step": step, **metrics})

    def _append(self, row: dict[str, Any]) -> None:
        self.metrics.append(row)
        if len(self.metrics) > MAX_METRICS:
            cut = len(self.metrics) - MAX_METRICS
            del self.metrics[:cut]
            self.dropped += cut

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        with self.lock:
            self.snapshots[member] = {"step": step, **snapshot}
            self.snapshot_version += 1

    def stop(self) -> None:
        """Ask the members to stop at their next check (they keep what they produced); once they are submitted."""
        if self.handle is not None and self.status in ("starting", "running"):
            self.status = "stopping"
            self.handle.stop()

    def metrics_since(self, seen: int) -> tuple[list[dict[str, Any]], int]:
        """Metric rows after the first ``seen`` ever received, and the new count seen."""
        with self.lock:
            start = max(seen - self.dropped, 0)
            rows = self.metrics[start:]
            return rows, self.dropped + len(self.metrics)


class RunManager:
    """Starts runs on the Dask client, one at a time, and saves them to ``runs_dir``."""

    def __init__(self, client: Client, runs_dir: Path, data_dir: Path = Path("sample_data")) -> None:
        self.client = client
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.runs_dir, self.runs_dir / "uploads"):  # left by a server killed while writing
            remove_stale_parts(d)
        self.data_dir = Path(data_dir)
        self.current: LiveRun | None = None
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}  # run id (Dask task keys) -> spec name, for the cluster view
        self._thread: threading.Thread | None = None
        # (path, mtime, size, kind, layout) -> (field, why the file is refused or "", where its weights are negative)
        self._checked: dict[tuple, tuple[str, str, str]] = {}
        # why no run may start now (app.dashboard.campaigns sets it), or ""
        self.blocked_by: Callable[[], str] = lambda: ""
        self.more_names: Callable[[], dict[str, str]] = dict  # run ids of others' tasks (a campaign's fits) -> names

    def run_names(self) -> dict[str, str]:
        """Run id (as Dask task keys carry it) -> name: this manager's runs and a campaign's fits in flight."""
        return {**self._names, **self.more_names()}

    @property
    def busy(self) -> bool:
        run = self.current
        return run is not None and run.status in ("starting", "running", "stopping")

    def check_readable(self, spec: Spec) -> None:
        """Specs from the browser may only read measured data under the data or runs directory, and only
        files that are measured data of their problem (:mod:`qcf_studio.engine.data.datafiles`; remembered per file
        version, since the page validates on every edit). A path outside those directories gets the same
        message whether or not it exists, so the page cannot be used to probe the server's files."""
        if spec.problem.data is None:
            return
        allowed = [self.data_dir.resolve(), self.runs_dir.resolve()]
        try:
            path: Path | None = Path(spec.problem.data).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long
            path = None
        if path is None or not any(path.is_relative_to(d) for d in allowed):
            raise SpecError("problem.data", f"only files under {' or '.join(map(str, allowed))} can be read here")
        try:
            stat = path.stat()
        except OSError:
            raise SpecError("problem.data", f"file not found: {spec.problem.data}") from None
        p = spec.problem
        layout = repr((p.columns, p.xsec, spec.limits.events))
        key = (path, stat.st_mtime_ns, stat.st_size, p.kind, layout)
        if key not in self._checked:
            try:
                data = read_measured_file(path, p.kind, columns=p.columns, xsec=p.xsec, max_events=spec.limits.events)
                self._checked[key] = ("", "", negative_weights(data))
            except DataFileError as e:
                self._checked[key] = (e.field or "problem.data", str(e), "")
            while len(self._checked) > _CHECKED_FILES:
                self._checked.pop(next(iter(self._checked)))
        field, message, negative = self._checked[key]
        if message:
            raise SpecError(field, message)
        check_methods(spec, negative)  # negative weights: whether the spec's method can use them (the GAN cannot)

    def start(self, spec: Spec) -> LiveRun:
        """Start ``spec`` (already validated); raises :class:`RunBusyError` while a run is active."""
        with self._lock:
            if self.busy:
                raise RunBusyError("a run is in progress; stop it before starting another")
            if why := self.blocked_by():
                raise RunBusyError(why)
            run = LiveRun(spec)
            self.current = run
            self._thread = threading.Thread(target=self._drive, args=(run,), name="qcf-run", daemon=True)
            self._thread.start()
        return run

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    def shutdown(self, timeout: float = 300.0) -> LiveRun | None:
        """Stop the run in progress and wait (up to ``timeout`` seconds) until it is saved; the server's
        last act on SIGINT or SIGTERM. Returns the run, if there was one."""
        run, thread = self.current, self._thread
        if thread is None or not thread.is_alive():
            return run
        deadline = time.monotonic() + timeout
        while thread.is_alive() and run is not None and run.handle is None and time.monotonic() < deadline:
            time.sleep(0.1)  # still preparing its data: it can be stopped once submitted
        self.stop()
        thread.join(max(0.0, deadline - time.monotonic()))
        return run

    def _started(self, run: LiveRun, handle: RunHandle) -> None:
        """The run's members are submitted: it can be stopped (:meth:`stop`), and the cluster view names its tasks."""
        self._names[handle.run_id] = run.spec.name
        while len(self._names) > 100:
            self._names.pop(next(iter(self._names)))

    def _drive(self, run: LiveRun) -> None:
        drive(self.client, run, self.runs_dir, started=lambda handle: self._started(run, handle))


def drive(
    client: Client, run: LiveRun, out_dir: Path | None, started: Callable[[RunHandle], None] | None = None
) -> None:
    """Train ``run.spec`` on ``client``, filling ``run`` as the members report, and save the results in ``out_dir``
    (not saved when ``None``). Never raises: a run that cannot be trained ends ``failed`` with the reason in
    ``run.error``. ``started`` is called with the run's handle once its members are submitted."""

    def submitted(handle: RunHandle) -> None:
        run.handle = handle
        if started is not None:
            started(handle)

    try:
        data = measured_data(run.spec)
        names = get_problem(run.spec.problem.kind).observable_names
        edges, hist = data_histograms(data)  # x-marginals for the live 1D views of 2D events
        run.hist_data = dict(zip(names, zip(edges[:, 0], marginal_x(hist, edges))))
        problem = ""
        if out_dir is None:
            ds = run_results(client, run.spec, data, sink=run, started=submitted)
        else:
            ds, saved = run_to_file(client, run.spec, data, out_dir, sink=run, started=submitted)
            run.result_path, problem = saved.path, saved.problem
        run.result = ds
        run.closure = {k: v for k, v in ds.attrs.items() if k.startswith("closure_")}
        run.error = "\n".join(filter(None, [ds.attrs.get("errors", ""), problem]))
        run.status = ds.attrs["status"] if out_dir is None or run.result_path is not None else "failed"
    except Exception as e:  # the app stays up; the user sees why
        run.error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        run.status = "failed"
    finally:
        run.finished = time.time()
