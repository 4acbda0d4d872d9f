"""Running a campaign's fits on a Dask cluster: as many at once as the workers take, resumable, one failure at a time.

Each fit is an ordinary run (:func:`qcf_studio.engine.run.distributed.start_run`: its members as tasks, checkpoints,
retries
of a dead worker's task, data-parallel ranks); the driver keeps enough fits in flight to keep every worker
slot busy and one more queued behind them, so a worker that finishes a fit starts the next at once.

- A finished fit is written atomically as ``<method>-r<replica>.nc`` in the campaign's folder the moment it
  completes; a rerun (:meth:`CampaignRunner.load_finished`) skips it. A failed fit goes to ``failed/``
  and is fitted again by a rerun; a stopped one (Ctrl-C, :meth:`CampaignRunner.stop`) is not kept.
- The summary is rebuilt from the records of every fit and replaced as fits finish (at most every
  ``summary_every`` seconds) and at the end.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr
from distributed import Client

from qcf_studio.engine.campaign.plan import CampaignPlan, FitKey, fit_files
from qcf_studio.engine.campaign.summary import FitRecord, build_summary, fit_record, missing_record, read_fit
from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.files import netcdf_bytes, remove_stale_parts, replace_file, save_run, write_new_file
from qcf_studio.engine.run.distributed import RunHandle, start_run
from qcf_studio.engine.run.runner import measured_data

__all__ = ["CampaignRunner", "Progress"]

MAX_FIT_BYTES = 2**30
POLL_SECONDS = 0.2  # a fit's results file (as app.catalog reads results)


@dataclass
class Progress:
    """Where a campaign stands: fits done of ``total`` (finished before this session included).

    The time left weighs each fit still to do by what a fit of its method has cost in this session (its members'
    compute seconds): a GAN fit of a campaign may cost fifty likelihood fits, so counting fits alike would put the
    time left of a ``[gan, mle]`` campaign off by up to a factor of two."""

    total: int
    done: int = 0  # completed, in all sessions
    failed: int = 0
    done_here: int = 0  # completed or failed in this session
    started: float = 0.0
    left: dict[str, int] = field(default_factory=dict)  # fits still to do in this session, by method
    costs: dict[str, list[float]] = field(default_factory=dict)  # compute seconds of this session's fits, by method

    def count(self, method: str, status: str, compute_seconds: float = float("nan")) -> None:
        """A fit of ``method`` ended with ``status``; ``compute_seconds``: its members' time (NaN if unknown)."""
        if status not in ("completed", "failed"):
            return
        if status == "completed":
            self.done += 1
        else:
            self.failed += 1
        self.done_here += 1
        if self.left.get(method, 0) > 0:
            self.left[method] -= 1
        self.costs.setdefault(method, []).append(compute_seconds)

    def eta_seconds(self) -> float | None:
        """Seconds left at this session's pace; ``None`` before the first fit of the session finished."""
        if self.done_here == 0:
            return None
        elapsed = time.monotonic() - self.started
        known = {m: [c for c in v if math.isfinite(c) and c > 0] for m, v in self.costs.items()}
        mean = {m: sum(v) / len(v) for m, v in known.items() if v}
        if not mean or not self.left:  # nothing to weigh with: every fit alike
            return elapsed / self.done_here * (self.total - self.done - self.failed)
        other = sum(mean.values()) / len(mean)  # a method with no fit yet this session
        done = sum(c if math.isfinite(c) and c > 0 else mean.get(m, other) for m, v in self.costs.items() for c in v)
        todo = sum(n * mean.get(m, other) for m, n in self.left.items())
        return elapsed * todo / done


@dataclass
class _InFlight:
    key: FitKey
    handle: RunHandle
    data: MeasuredData
    stopped: bool = False

    def futures(self) -> list:
        h = self.handle
        extra = [f for fs in h.rank_futures.values() for f in fs]
        return h.futures + extra + ([h.reference_future] if h.reference_future is not None else [])

    def finished(self) -> bool:
        return all(f.done() for f in self.futures())


class CampaignRunner:
    """Fits ``plan`` on ``client``; ``on_record(record, progress)`` is called (from the thread that calls
    :meth:`run`) as each fit finishes. :meth:`stop` may be called from any thread. Without a client (``None``,
    until one is set) it reads the finished fits and writes the summary, and fits nothing."""

    def __init__(
        self,
        client: Client | None,
        plan: CampaignPlan,
        on_record: Callable[[FitRecord, Progress], None] | None = None,
        in_flight: int | None = None,
        summary_every: float = 5.0,
    ) -> None:
        self.client, self.plan = client, plan
        self.on_record = on_record or (lambda record, progress: None)
        self.records: dict[FitKey, FitRecord] = {}
        self.progress = Progress(total=len(plan.keys))
        self.summary_every = summary_every
        self._in_flight = in_flight
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_summary = 0.0
        self._order: dict[FitKey, int] = {}
        self._names: dict[str, str] = {}  # run id of each fit in flight (its Dask task keys) -> what it is

    # Resuming -----------------------------------------------------------------------------------

    def load_finished(self) -> list[FitKey]:
        """Read the fits already in the folder (a rerun); unreadable or unfinished files are moved to
        ``failed/``. Returns the keys that need no fit."""
        self.plan.prepare()
        remove_stale_parts(self.plan.folder)
        wanted = set(self.plan.keys)
        done = []
        for key, path in fit_files(self.plan.folder).items():
            if key not in wanted:
                continue  # a replica beyond --replicas this time, or a method not asked for: kept, not used
            record = self._read_fit(path, key)
            if record is None:
                continue
            self.records[key] = record
            done.append(key)
        self.progress.done = len(done)
        return done

    def _read_fit(self, path: Path, key: FitKey) -> FitRecord | None:
        record = read_fit(path, key, self.plan)
        if record.status != "completed":  # not a finished fit of this campaign: moved aside, fitted again
            self.plan.set_aside(path, "unreadable" if record.path is None else record.status)
            return None
        return record

    # Running ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no more fits and ask those in flight to stop (they are not kept)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def slots_in_flight(self) -> int:
        """Fits at once: enough for every worker slot, and one more queued behind them."""
        if self._in_flight is not None:
            return max(1, self._in_flight)
        info = self._dask().scheduler_info(n_workers=-1)["workers"]
        slots = sum(w["nthreads"] for w in info.values()) or 1
        spec = self.plan.spec
        tasks = [spec.ensemble.members * spec.cluster.ranks if m == "gan" else 1 for m in self.plan.campaign.methods]
        return math.ceil(slots / min(tasks)) + 1

    def run(self) -> xr.Dataset:
        """Fit every key not finished yet; returns the summary (also written to ``plan.summary_path``).

        Raises ``ValueError`` when the cluster cannot host the fits (data-parallel ranks, CUDA without
        GPUs), before any fit ran."""
        self._dask()  # before any fit starts
        self._order = {k: i for i, k in enumerate(self.plan.keys)}
        todo = deque(k for k in self.plan.keys if k not in self.records or self.records[k].status != "completed")
        self.progress.started = time.monotonic()
        self.progress.left = dict(Counter(k.method for k in todo))
        self.progress.costs = {}
        active: list[_InFlight] = []
        limit = self.slots_in_flight()
        self._names = {}
        try:
            while (todo and not self.stopping) or active:
                while todo and len(active) < limit and not self.stopping:
                    key = todo.popleft()
                    started = self._start(key)
                    if started is not None:
                        active.append(started)
                        self._names = {**self._names, started.handle.run_id: f"{self.plan.spec.name} {key.stem}"}
                if self.stopping:
                    for fit in active:
                        if not fit.stopped:
                            fit.handle.stop()
                            fit.stopped = True
                if not active:
                    continue
                finished = [f for f in active if f.finished()]
                if not finished:
                    # Polled, not distributed.wait(..., timeout): each timed-out wait leaves a task per future
                    # pending until that future ends, and a campaign waits thousands of times.
                    time.sleep(POLL_SECONDS)
                for fit in finished:
                    active.remove(fit)
                    self._names = {k: v for k, v in self._names.items() if k != fit.handle.run_id}
                    self._finish(fit)
        finally:
            for fit in active:  # an exception (or KeyboardInterrupt) in this loop: nothing left running
                fit.handle.stop()
        for key in todo:
            self.records.setdefault(key, missing_record(key, "stopped" if self.stopping else "missing"))
        return self.write_summary()

    def _dask(self) -> Client:
        if self.client is None:
            raise ValueError("a campaign's fits need a Dask client")
        return self.client

    def run_names(self) -> dict[str, str]:
        """The run id of each fit in flight (as its Dask task keys carry it) -> ``<campaign> <method>-r<replica>``
        (for a view of the cluster's tasks; any thread)."""
        return self._names

    def _start(self, key: FitKey) -> _InFlight | None:
        spec = self.plan.fit_spec(key)
        try:
            data = measured_data(spec)
        except Exception as e:  # noqa: BLE001 (a fit that cannot start is a failed fit; the campaign goes on)
            self._record(missing_record(key, "failed", f"{type(e).__name__}: {str(e)[:300]}"))
            return None
        # earlier fits' members first, so that fits finish one after another
        return _InFlight(key, start_run(self._dask(), spec, data, priority=-1000 * self._order[key]), data)

    def _finish(self, fit: _InFlight) -> None:
        key, handle = fit.key, fit.handle
        try:
            members = handle.results()
            ds = build_results(handle.spec, fit.data, members, handle.wall_seconds, handle.reference())
        except Exception as e:  # noqa: BLE001
            self._record(missing_record(key, "failed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=2)}"))
            return
        ds.attrs.update(
            {"campaign": self.plan.spec.name, "campaign_replica": key.replica, "campaign_method": key.method}
        )
        status = ds.attrs["status"]
        path = None
        if status == "completed":
            path = self._save_completed(ds, key)
        elif status == "failed":
            path = save_run(ds, self.plan.failed_dir, key.stem).path
        record = fit_record(ds, key, path)
        if status == "completed" and path is None:
            record.status, record.message = "failed", "finished but could not be saved (see the log)"
        self._record(record, sum(float(getattr(m, "wall_seconds", math.nan)) for m in members))

    def _save_completed(self, ds: xr.Dataset, key: FitKey) -> Path | None:
        content = netcdf_bytes(ds)
        target = self.plan.fit_path(key)
        try:
            return write_new_file(content, target)
        except FileExistsError:  # another process running the same campaign finished it first: theirs counts
            return target
        except OSError:
            saved = save_run(ds, self.plan.folder, key.stem)  # rescued where it can be, never lost silently
            return saved.path

    def _record(self, record: FitRecord, compute_seconds: float = float("nan")) -> None:
        with self._lock:
            self.records[record.key] = record
            self.progress.count(record.key.method, record.status, compute_seconds)
        self.on_record(record, self.progress)
        if time.monotonic() - self._last_summary > self.summary_every:
            self.write_summary()

    # Summary ------------------------------------------------------------------------------------

    def summary(self) -> xr.Dataset:
        with self._lock:
            records = dict(self.records)
        return build_summary(self.plan, records)

    def write_summary(self) -> xr.Dataset:
        """Build the summary and replace ``summary.nc`` with it; returns it."""
        ds = self.summary()
        replace_file(netcdf_bytes(ds), self.plan.summary_path)
        self._last_summary = time.monotonic()
        return ds
