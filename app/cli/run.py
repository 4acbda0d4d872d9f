"""``qcf-studio run`` and its work, which the Python API (:func:`qcf_studio.run`) shares: train a spec on a cluster
with progress on stderr, stop the members at the first SIGINT or SIGTERM and keep what they produced, and save the
results atomically under a new name when given a folder."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qcf_studio.app.cli.common import fail, load_spec_arg, tls_from_args

if TYPE_CHECKING:
    import xarray as xr

    from qcf_studio.engine.results.files import SavedRun
    from qcf_studio.engine.spec import Spec

__all__ = ["Trained", "train", "cmd_run"]


@dataclass
class Trained:
    """What :func:`train` produced: the results, where they were saved (``None`` when no folder was given) and
    the signal that stopped the run early (``None`` if none came)."""

    ds: xr.Dataset
    saved: SavedRun | None
    signal: int | None


def train(
    spec: Spec,
    out: str | Path | None,
    cluster: Any = None,
    workers: int | None = None,
    security: Any = None,
    progress: bool = True,
    out_label: str = "--out",
) -> Trained:
    """Train ``spec`` and save its results in the folder ``out`` (not saved when ``None``).

    Arguments:
        cluster: a scheduler address, a ``distributed.Client`` (used and left open), or ``None`` for an embedded
            cluster of ``workers`` processes (default: the spec's ``cluster.workers``), closed at the end.
        security: TLS for a remote scheduler (:func:`qcf_studio.app.cluster.tls_security`).
        progress: a progress bar (or lines, where stderr is no terminal) over the members' steps on stderr.
        out_label: how messages name ``out`` (the option or argument it came from).

    ``out`` is checked (and ``.part`` files a killed run left there removed) before anything starts. Raises
    :class:`qcf_studio.app.signals.Interrupted` when a signal came before the members were training (nothing to save),
    and
    ``ValueError`` when the cluster cannot host the spec.
    """
    from qcf_studio.app.cli.progress import ProgressBarSink
    from qcf_studio.app.cluster import client_for
    from qcf_studio.app.signals import Interrupted, StopSignals
    from qcf_studio.engine.results.files import check_writable, remove_stale_parts
    from qcf_studio.engine.run.drive import run_results, run_to_file
    from qcf_studio.engine.run.runner import measured_data

    out_dir = None
    if out is not None:
        out_dir = check_writable(out, out_label)  # before any work goes into the run
        remove_stale_parts(out_dir)
    with StopSignals() as signals:
        data = measured_data(spec)
        count = workers if workers is not None else spec.cluster.workers
        with client_for(cluster, count, spec.cluster.device, security) as client:
            bar = ProgressBarSink(spec.training.steps, spec.ensemble.members, spec.name) if progress else None

            def say(line: str) -> None:
                if bar is not None:
                    bar.write(line)
                else:
                    print(line, file=sys.stderr, flush=True)

            signals.notice = lambda text: say(f"qcf-studio: {text}")

            def collect(handle: Any) -> list[Any]:  # a first SIGINT/SIGTERM stops the members, who keep their work
                try:
                    members = handle.results()
                    signals.defer()  # what is left is saving, which a signal must not interrupt
                except Interrupted as e:
                    say(
                        f"qcf-studio: {e}: stopping; the members finish their current step and keep what they "
                        "produced ..."
                    )
                    handle.stop()
                    members = handle.results()
                if bar is not None:
                    bar.finish(members)
                    bar.close()
                return members

            try:
                if out_dir is None:
                    return Trained(run_results(client, spec, data, sink=bar, collect=collect), None, signals.received)
                ds, saved = run_to_file(client, spec, data, out_dir, sink=bar, collect=collect)
            finally:
                if bar is not None:
                    bar.close()  # (again, after collect: a no-op) when submitting failed or was interrupted
    return Trained(ds, saved, signals.received)


def cmd_run(args: argparse.Namespace) -> int:
    """``qcf-studio run``: :func:`train`, then the closure numbers on stderr and the results file last on stdout."""
    from qcf_studio.app.signals import Interrupted, exit_code
    from qcf_studio.engine.results import closure_summary

    spec = load_spec_arg(args.spec)
    try:
        trained = train(spec, args.out, args.scheduler, args.workers, security=tls_from_args(args))
    except Interrupted as e:
        print("qcf-studio: interrupted before training started; nothing to save", file=sys.stderr)
        return exit_code(e.signum)
    except ValueError as e:  # --out, or the cluster cannot host the spec (data_parallel ranks, cuda without GPUs)
        return fail(str(e))
    ds, saved = trained.ds, trained.saved
    assert saved is not None  # a folder was given
    status = ds.attrs["status"]
    if "closure_passed" in ds.attrs:
        print(closure_summary(ds.attrs), file=sys.stderr)
    print(
        f"status {status}, {ds.attrs['wall_seconds']:.1f} s, {ds.attrs['events_per_second']:.3g} events/s",
        file=sys.stderr,
    )
    if ds.attrs.get("errors"):
        print(ds.attrs["errors"], file=sys.stderr)
    if saved.problem:
        print(f"qcf-studio: error: {saved.problem}", file=sys.stderr)
    if saved.path is not None:
        print(saved.path)
    if trained.signal is not None:
        return exit_code(trained.signal)
    return 0 if status == "completed" and not saved.problem else 1
