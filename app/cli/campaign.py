"""``qcf-studio campaign``: a closure campaign from the command line (:mod:`qcf_studio.engine.campaign`), with a
progress bar
over the fits on stderr and the summary's path as the last line of stdout. Exit codes as ``qcf-studio run``.
:func:`fit_campaign` is its work, which the Python API (:func:`qcf_studio.campaign`) shares."""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qcf_studio.app.cli.common import fail, load_spec_arg, tls_from_args
from qcf_studio.app.cli.progress import Progress

if TYPE_CHECKING:
    import xarray as xr

    from qcf_studio.engine.campaign.plan import CampaignPlan
    from qcf_studio.engine.spec import Spec

__all__ = ["run_campaign", "fit_campaign", "Campaigned", "CampaignBar"]


@dataclass
class Campaigned:
    """What :func:`fit_campaign` produced: the summary, its plan (folder, fits) and the signal that stopped the
    campaign early (``None`` if none came)."""

    summary: xr.Dataset
    plan: CampaignPlan
    signal: int | None


def fit_campaign(
    spec: Spec,
    out: str | Path,
    replicas: int | None = None,
    methods: list[str] | None = None,
    cluster: Any = None,
    workers: int | None = None,
    security: Any = None,
    progress: bool = True,
    out_label: str = "--out",
) -> Campaigned:
    """Fit ``spec``'s campaign (``replicas`` and ``methods`` replace its own) in ``out/<name>/``, resumable; the
    fits' progress on stderr. ``cluster``: a scheduler address, a ``distributed.Client`` (left open) or ``None``
    (an embedded cluster of ``workers`` processes, default the spec's). The first SIGINT or SIGTERM keeps the
    finished fits and drops those in flight. With every fit finished already it only rebuilds the summary, and
    starts or contacts no cluster. Raises :class:`qcf_studio.app.signals.Interrupted` when a signal came
    before the
    campaign started, and ``ValueError`` for a bad request (its folder holds another spec's campaign, ...)."""
    from qcf_studio.app.cluster import client_for
    from qcf_studio.app.signals import Interrupted, StopSignals
    from qcf_studio.engine.campaign.driver import CampaignRunner
    from qcf_studio.engine.campaign.plan import CampaignPlan, campaign_of
    from qcf_studio.engine.results.files import check_writable

    if replicas is not None and replicas < 2:
        raise ValueError(f"replicas: a campaign needs at least 2 replicas, got {replicas}")
    spec = campaign_of(spec, replicas, methods)
    plan = CampaignPlan(spec, check_writable(out, out_label))
    plan.prepare()  # a folder holding another spec's campaign is refused before a cluster starts
    with StopSignals() as signals:
        runner = CampaignRunner(None, plan)
        done = runner.load_finished()
        if len(done) == len(plan.keys):  # a rerun of a finished campaign: its summary, rebuilt, and no cluster
            if progress:
                print(f"qcf-studio: {plan.folder}: {len(done)} of {len(done)} fits done already", file=sys.stderr)
            return Campaigned(runner.write_summary(), plan, None)
        count = workers if workers is not None else spec.cluster.workers
        with client_for(cluster, count, spec.cluster.device, security) as client:
            runner.client = client
            bar = CampaignBar(
                len(plan.keys), len(done), spec.name, quiet=not progress, time_left=runner.progress.eta_seconds
            )
            runner.on_record = bar.update
            signals.notice = lambda text: bar.write(f"qcf-studio: {text}")
            outcome: dict[str, Any] = {}
            finished = threading.Event()
            try:
                if done:
                    bar.write(
                        f"qcf-studio: {plan.folder}: {len(done)} of {len(plan.keys)} fits done already; "
                        f"fitting the rest"
                    )

                def drive() -> None:
                    try:
                        outcome["summary"] = runner.run()
                    except BaseException as e:  # noqa: BLE001 (reported by the main thread)
                        outcome["error"] = e
                    finally:
                        finished.set()

                # The main thread sleeps while the driver works: a signal raises here (never Thread.join, which
                # an exception from a signal handler leaves believing the thread has ended, Python < 3.13).
                threading.Thread(target=drive, name="qcf-campaign", daemon=True).start()
                while not finished.is_set():
                    time.sleep(0.2)
            except Interrupted as e:
                bar.write(f"qcf-studio: {e}: stopping; finished fits are kept, those in flight are dropped ...")
                signals.defer()
                runner.stop()
                while not finished.is_set():
                    time.sleep(0.2)
            signals.defer()
            bar.close()
    if "error" in outcome:
        raise outcome["error"]
    return Campaigned(outcome["summary"], plan, signals.received)


def run_campaign(args: argparse.Namespace) -> int:
    """``qcf-studio campaign``: fit the spec's replicas on the cluster, resumable; the summary's path last."""
    from qcf_studio.app.signals import Interrupted, exit_code

    if args.replicas is not None and args.replicas < 2:
        return fail(f"--replicas: a campaign needs at least 2 replicas, got {args.replicas}")
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    spec = load_spec_arg(args.spec)
    try:
        done = fit_campaign(
            spec, args.out, args.replicas, methods, args.scheduler, args.workers, security=tls_from_args(args)
        )
    except Interrupted as e:
        print("qcf-studio: interrupted before the campaign started; nothing to save", file=sys.stderr)
        return exit_code(e.signum)
    except ValueError as e:
        return fail(str(e))
    summary = done.summary
    statuses = list(summary["status"].values.ravel())
    counts = {s: statuses.count(s) for s in ("completed", "failed", "stopped", "missing") if statuses.count(s)}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(statuses)} fits", file=sys.stderr)
    for method in summary["method"].values:
        print(f"{method}: {summary.attrs[f'verdict_{method}']}", file=sys.stderr)
        print(f"{method}: {summary.attrs[f'criterion_{method}']}", file=sys.stderr)
    print(done.plan.summary_path)
    if done.signal is not None:
        return exit_code(done.signal)
    return 0 if counts.get("completed", 0) == len(statuses) else 1


class CampaignBar:
    """The campaign's :class:`~qcf_studio.app.cli.progress.Progress` over its fits, with the time left and the
    failures."""

    def __init__(
        self, total: int, done: int, desc: str, quiet: bool = False, time_left: Callable[[], float | None] | None = None
    ) -> None:
        # initial: fits of earlier sessions count as done but not into the rate and the time left
        # quiet: no bar nor progress lines (they go to a buffer); messages (failed fits, signals) still to stderr
        # time_left: the runner's estimate (its fits weighed by their method's cost), else one from the fits' rate
        self.quiet = quiet
        stream = io.StringIO() if quiet else None
        self.progress = Progress(total, desc, "fit", initial=done, stream=stream, time_left=time_left)

    def update(self, record: Any, progress: Any) -> None:
        if record.status == "failed":
            why = record.message.splitlines()[0][:200] if record.message else "see its file in failed/"
            self.write(f"qcf-studio: fit {record.key.stem} failed: {why}")
        finished = record.status in ("completed", "failed")
        self.progress.set(self.progress.done + finished, {"failed": progress.failed})

    def write(self, line: str) -> None:
        if self.quiet:
            print(line, file=sys.stderr, flush=True)
        else:
            self.progress.write(line)

    def close(self) -> None:
        self.progress.close()
