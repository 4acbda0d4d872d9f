"""``qcf-studio campaign``: a closure campaign from the command line (:mod:`engine.campaign`), with a progress bar
over the fits on stderr and the summary's path as the last line of stdout. Exit codes as ``qcf-studio run``."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from app.cli.common import fail, load_spec_arg, tls_from_args
from app.cli.progress import Progress

__all__ = ["run_campaign", "CampaignBar"]


def run_campaign(args: argparse.Namespace) -> int:
    """``qcf-studio campaign``: fit the spec's replicas on the cluster, resumable; the summary's path last."""

    from app.cluster import close, connect
    from app.signals import Interrupted, StopSignals, exit_code
    from engine.campaign.plan import CampaignPlan, campaign_of
    from engine.results.files import check_writable

    if args.replicas is not None and args.replicas < 2:
        return fail(f"--replicas: a campaign needs at least 2 replicas, got {args.replicas}")
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    spec = campaign_of(load_spec_arg(args.spec), args.replicas, methods)
    out_dir = check_writable(args.out)
    plan = CampaignPlan(spec, out_dir)
    plan.prepare()  # a folder holding another spec's campaign is refused before a cluster starts
    with StopSignals() as signals:
        try:
            workers = args.workers if args.workers is not None else spec.cluster.workers
            client = connect(args.scheduler, workers, spec.cluster.device, security=tls_from_args(args))
        except Interrupted as e:
            print("qcf-studio: interrupted before the campaign started; nothing to save", file=sys.stderr)
            return exit_code(e.signum)
        try:
            from engine.campaign.driver import CampaignRunner

            runner = CampaignRunner(client, plan)
            done = runner.load_finished()
            bar = CampaignBar(len(plan.keys), len(done), spec.name)
            runner.on_record = bar.update
            signals.notice = lambda text: bar.write(f"qcf-studio: {text}")
            try:
                if done:
                    bar.write(
                        f"qcf-studio: {plan.folder}: {len(done)} of {len(plan.keys)} fits done already; "
                        f"fitting the rest"
                    )
                outcome: dict[str, Any] = {}
                finished = threading.Event()

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
        finally:
            close(client)
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, ValueError):
            return fail(str(error))
        raise error
    summary = outcome["summary"]
    statuses = list(summary["status"].values.ravel())
    counts = {s: statuses.count(s) for s in ("completed", "failed", "stopped", "missing") if statuses.count(s)}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(statuses)} fits", file=sys.stderr)
    for method in summary["method"].values:
        print(f"{method}: {summary.attrs[f'verdict_{method}']}", file=sys.stderr)
        print(f"{method}: {summary.attrs[f'criterion_{method}']}", file=sys.stderr)
    print(plan.summary_path)
    if signals.received is not None:
        return exit_code(signals.received)
    return 0 if counts.get("completed", 0) == len(statuses) else 1


class CampaignBar:
    """The campaign's :class:`~app.cli.progress.Progress` over its fits, with the time left and the failures."""

    def __init__(self, total: int, done: int, desc: str) -> None:
        # initial: fits of earlier sessions count as done but not into the rate and the time left
        self.progress = Progress(total, desc, "fit", initial=done)

    def update(self, record: Any, progress: Any) -> None:
        if record.status == "failed":
            why = record.message.splitlines()[0][:200] if record.message else "see its file in failed/"
            self.write(f"qcf-studio: fit {record.key.stem} failed: {why}")
        finished = record.status in ("completed", "failed")
        self.progress.set(self.progress.done + finished, {"failed": progress.failed})

    def write(self, line: str) -> None:
        self.progress.write(line)

    def close(self) -> None:
        self.progress.close()
