"""Campaign control shared by every browser session: one closure campaign at a time on the run manager's cluster.

No Panel imports. As with single runs (:mod:`qcf_studio.app.dashboard.runs`), sessions poll a :class:`LiveCampaign` for
what
changed since they last looked: its record version, progress, status, and a summary Dataset that a
background thread rebuilds from the records at most every :data:`SUMMARY_EVERY_S` seconds when new fits
finished (so a poll never builds one, however many sessions watch). A campaign and a single run never
share the cluster: each manager refuses to start while the other is busy.

Campaigns are kept under ``<runs_dir>/campaigns/<spec name>/``; starting one whose folder holds a partial
campaign of the same spec resumes it (finished fits are not fitted again).
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from qcf_studio.app.campaign_files import campaigns_dir
from qcf_studio.app.dashboard.durations import duration_text
from qcf_studio.app.dashboard.runs import RunBusyError, RunManager
from qcf_studio.engine.campaign.driver import CampaignRunner, Progress
from qcf_studio.engine.campaign.plan import CampaignPlan
from qcf_studio.engine.campaign.summary import FitRecord, build_summary
from qcf_studio.engine.spec import Spec

__all__ = ["CampaignManager", "LiveCampaign", "shared_campaigns", "SUMMARY_EVERY_S"]

SUMMARY_EVERY_S = 1.0  # the least time between two rebuilds of a running campaign's summary
ACTIVE = ("starting", "running", "stopping")


@dataclass
class LiveCampaign:
    """State of one campaign as the dashboard sees it. ``status``: starting | running | stopping | completed |
    stopped | failed. ``version`` counts fit records received; ``summary`` reflects ``summary_version`` of them."""

    spec: Spec
    folder: Path
    status: str = "starting"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str = ""
    total: int = 0
    done: int = 0  # completed fits, earlier sessions of this campaign included
    failed: int = 0
    resumed: int = 0  # fits found finished in the folder at the start
    eta_seconds: float | None = None
    version: int = 0
    summary: xr.Dataset | None = None
    summary_version: int = -1
    failures: list[str] = field(default_factory=list)  # "<fit>: <first line of why>", the first few
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_requested: bool = False

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def progress_text(self) -> str:
        """``"7 of 10 fits done · 1 failed · about 4 s left"`` (plain text, no values from files)."""
        text = f"{self.done} of {self.total} fits done"
        if self.resumed:
            text += f" ({self.resumed} from before)"
        if self.failed:
            text += f" · {self.failed} failed"
        if self.active and self.eta_seconds is not None:
            text += f" · about {duration_text(self.eta_seconds)} left"
        elapsed = (self.finished or time.time()) - self.started
        return text + f" · elapsed {duration_text(elapsed)}"

    def _set_summary(self, ds: xr.Dataset, version: int) -> None:
        with self.lock:
            if version >= self.summary_version:
                self.summary, self.summary_version = ds, version


class CampaignManager:
    """Runs campaigns on ``runs.client`` (one at a time, never beside a single run) into
    ``<runs.runs_dir>/campaigns``. Use :func:`shared_campaigns` to get the one of a :class:`RunManager`."""

    def __init__(self, runs: RunManager) -> None:
        self.runs = runs
        self.folder = campaigns_dir(runs.runs_dir)
        self.current: LiveCampaign | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._runner: CampaignRunner | None = None  # the current campaign's
        runs.blocked_by = self._blocks_runs
        runs.more_names = self.run_names

    @property
    def busy(self) -> bool:
        c = self.current
        return c is not None and c.active

    def run_names(self) -> dict[str, str]:
        """Run id -> name of the current campaign's fits in flight (the Cluster tab names their tasks)."""
        runner = self._runner
        return runner.run_names() if runner is not None else {}

    def _blocks_runs(self) -> str:
        return "a campaign is in progress; stop it before starting a run" if self.busy else ""

    def start(self, spec: Spec) -> LiveCampaign:
        """Start (or resume) the campaign of ``spec``, which has a campaign section. Raises
        :class:`~qcf_studio.app.dashboard.runs.RunBusyError` while a run or a campaign is active, and
        :class:`~qcf_studio.engine.spec.SpecError` when its folder holds a campaign of another spec."""
        if spec.campaign is None:
            raise ValueError("the spec has no campaign section")
        with self._lock:
            if self.runs.busy:
                raise RunBusyError("a run is in progress; stop it before starting a campaign")
            if self.busy:
                raise RunBusyError("a campaign is in progress; stop it before starting another")
            plan = CampaignPlan(spec, self.folder)
            plan.prepare()  # raises SpecError for another spec's folder, before anything runs
            live = LiveCampaign(spec, plan.folder, total=len(plan.keys))
            live._set_summary(build_summary(plan, {}), 0)  # empty: the plots have their shape at once
            self.current, self._runner = live, None
            self._thread = threading.Thread(target=self._drive, args=(live, plan), name="qcf-campaign", daemon=True)
            self._thread.start()
        return live

    def stop(self) -> None:
        """Start no more fits; those in flight are dropped (finished fits stay in the folder)."""
        live, runner = self.current, self._runner
        if live is None or not live.active:
            return
        live.stop_requested = True
        live.status = "stopping"
        if runner is not None:
            runner.stop()

    def shutdown(self, timeout: float = 60.0) -> LiveCampaign | None:
        """Stop the campaign in progress and wait (up to ``timeout`` seconds) until its summary is written."""
        live, thread = self.current, self._thread
        if thread is None or not thread.is_alive():
            return live
        self.stop()
        thread.join(timeout)
        return live

    def _on_record(self, live: LiveCampaign, record: FitRecord, progress: Progress) -> None:
        with live.lock:
            live.version += 1
            live.done, live.failed = progress.done, progress.failed
            live.eta_seconds = progress.eta_seconds()
            if record.status == "failed" and len(live.failures) < 5:
                why = record.message.splitlines()[0][:200] if record.message else "see its file in failed/"
                live.failures.append(f"{record.key.stem}: {why}")

    def _drive(self, live: LiveCampaign, plan: CampaignPlan) -> None:
        runner = CampaignRunner(self.runs.client, plan, on_record=lambda r, p: self._on_record(live, r, p))
        self._runner = runner
        done = threading.Event()
        summarizer = threading.Thread(
            target=self._summarize, args=(live, runner, done), name="qcf-campaign-summary", daemon=True
        )
        try:
            finished = runner.load_finished()
            with live.lock:
                live.resumed = live.done = len(finished)
                live.version += len(finished)
            if live.stop_requested:  # asked before the runner existed
                live.status = "stopping"
                runner.stop()
            else:
                live.status = "running"
            summarizer.start()
            summary = runner.run()
            live._set_summary(summary, live.version)
            status = "stopped" if live.stop_requested else "completed"
        except Exception as e:  # the app stays up; the user sees why
            live.error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            status = "failed"
        finally:
            done.set()
        live.finished, live.eta_seconds = time.time(), None
        live.status = status  # last: a session that sees it finished sees the final summary and time

    @staticmethod
    def _summarize(live: LiveCampaign, runner: CampaignRunner, done: threading.Event) -> None:
        while not done.wait(SUMMARY_EVERY_S):
            version = live.version
            if version == live.summary_version:
                continue
            try:
                live._set_summary(runner.summary(), version)
            except Exception as e:  # noqa: BLE001 (a summary that cannot be built now may be built later)
                live.error = f"summary: {type(e).__name__}: {e}"


_shared: weakref.WeakKeyDictionary[RunManager, CampaignManager] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_campaigns(runs: RunManager) -> CampaignManager:
    """The one :class:`CampaignManager` of ``runs``, made on first use (every session of a server shares it)."""
    with _shared_lock:
        manager = _shared.get(runs)
        if manager is None:
            manager = _shared[runs] = CampaignManager(runs)
        return manager
