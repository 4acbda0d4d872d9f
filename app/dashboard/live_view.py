"""The live view of one run (:class:`~qcf_studio.app.dashboard.runs.LiveRun`): the plots of the dashboard's Live tab
(:class:`LiveView`), its status line (:func:`status_text`), and the two together as a notebook cell's view of a
run in the background (:class:`RunWatch`, :func:`qcf_studio.start`).

Pull-based, as the dashboard is: the owner calls :meth:`LiveView.update`, which sends the plots only what arrived
since it last looked, so any number of views can watch one run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import panel as pn

from qcf_studio.app.dashboard.durations import duration_text
from qcf_studio.app.dashboard.markup import md_block, md_code
from qcf_studio.app.dashboard.runs import LiveRun
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results import closure_summary
from qcf_studio.engine.spec import Spec
from qcf_studio.layouts.heatmaps import live_heatmaps, true_qcfs_2d
from qcf_studio.layouts.live import DEFAULT_SMOOTHING, LivePlots
from qcf_studio.layouts.page import grid, live_panels
from qcf_studio.layouts.results import true_qcf_projections

__all__ = ["LiveView", "RunWatch", "status_text", "SNAPSHOT_S", "POLL_MS"]

POLL_MS = 500  # how often a view pulls new metrics from its run (only new rows are sent)
SNAPSHOT_S = 2.0  # the least time between two redraws of a view's snapshot panels


class LiveView(pn.viewable.Viewer):
    """The live plots of a spec's run: losses and accuracies, parameters, QCF bands, observables (heat maps in
    2D). :meth:`build` draws empty plots for a spec, :meth:`attach` follows a run, :meth:`update` pulls from it."""

    def __init__(self, spec: Spec | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.plot_area = pn.Column(sizing_mode="stretch_width")
        self.plots: LivePlots | None = None
        self.run: LiveRun | None = None
        self._seen = 0
        self._snapshot_version = -1
        self._snapshot_drawn = -math.inf
        if spec is not None:
            self.build(spec)

    def attach(self, run: LiveRun) -> None:
        """Follow ``run`` from its start (its rows so far come at the next :meth:`update`)."""
        self.run = run
        self._seen = 0
        self._snapshot_version = -1
        self._snapshot_drawn = -math.inf
        self.build(run.spec)

    def build(self, spec: Spec) -> None:
        """Empty plots for ``spec``'s problem, members and method (the smoothing chosen so far is kept)."""
        problem = get_problem(spec.problem.kind)
        truth = spec.truth_values() if spec.problem.data is None else None
        self.plots = plots = LivePlots(
            problem.param_names,
            problem.qcf_names,
            problem.observable_names,
            truth,
            spec.ensemble.members,
            spec.bounds_values(),
            ranks=spec.cluster.ranks if spec.cluster.mode == "data_parallel" else 1,
            method=spec.training.method,
            smoothing=self.plots.smoothing if self.plots is not None else DEFAULT_SMOOTHING,
        )
        qcf_true = true_qcf_projections(problem, truth) if truth is not None else None
        two_d = problem.event_dims == 2
        panels = live_panels(plots, qcf_true, two_d)
        if two_d:  # heat maps of the members' mean predicted density, the truth and their ratio
            x, y, q = true_qcfs_2d(problem, truth if truth is not None else problem.truth)
            rows = live_heatmaps(plots, x, y, q if truth is not None else None)
            panels.append(pn.pane.Markdown("### 2D QCFs: predicted (mean over members) | true | predicted / true"))
            panels.append(
                pn.Column(
                    *(grid(row, ncols=len(row)) for row in rows), name="qcf-heatmaps", sizing_mode="stretch_width"
                )
            )
        self.plot_area[:] = panels

    def update(self) -> None:
        """Send the plots the metric rows that arrived since the last call and, at most every :data:`SNAPSHOT_S`
        seconds (and once the run has ended), the members' latest snapshots."""
        run, plots = self.run, self.plots
        if run is None or plots is None:
            return
        rows, self._seen = run.metrics_since(self._seen)
        plots.push_metrics(rows)
        # Snapshots redraw whole panels (QCF bands, histograms, heat maps): at most every SNAPSHOT_S seconds.
        due = time.monotonic() - self._snapshot_drawn >= SNAPSHOT_S or run.status not in ("starting", "running")
        if run.snapshot_version != self._snapshot_version and due:
            self._snapshot_version = run.snapshot_version
            self._snapshot_drawn = time.monotonic()
            with run.lock:
                snaps = dict(run.snapshots)
            plots.push_snapshot(snaps, run.hist_data)  # the data histograms are made once per run

    def __panel__(self) -> pn.viewable.Viewable:
        return self.plot_area


def status_text(run: LiveRun) -> str:
    """The run's state in Markdown: status, steps, time, where it was saved, the closure verdict, errors."""
    total, done = run.total_steps, run.done_steps
    per_member = ", ".join(f"member {m}: step {s:,}" for m, s in sorted(run.steps.items()))
    eta = run.eta_seconds()
    elapsed = (run.finished or time.time()) - run.started
    text = f"**{run.status}** — step {done:,} of {total:,} ({per_member or 'waiting for workers'})"
    text += f" · elapsed {duration_text(elapsed)}"
    if eta is not None:
        text += f" · about {duration_text(eta)} left"
    if run.result_path is not None:
        text += f"\n\nSaved: {md_code(run.result_path)}"
    if run.closure:
        text += f"\n\n{closure_summary(run.closure)}"
    if run.error:
        text += f"\n\n{md_block(run.error)}"
    return text


class RunWatch(pn.viewable.Viewer):
    """A run's progress bar, status and live plots, refreshed every :data:`POLL_MS` ms until the run has ended
    (the view of :meth:`qcf_studio.Fit.view` in a notebook cell)."""

    def __init__(self, run: LiveRun, period_ms: int = POLL_MS, **params: Any) -> None:
        super().__init__(**params)
        self.run = run
        self.live = LiveView()
        self.live.attach(run)
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["run-status"])
        self.refresh()
        self._callback = pn.state.add_periodic_callback(self._poll, period=period_ms) if run.finished is None else None

    def refresh(self) -> None:
        """Pull what arrived and redraw the status (the periodic callback calls this)."""
        with pn.io.hold():
            self.live.update()
            self.progress.max = max(self.run.total_steps, 1)
            self.progress.value = min(self.run.done_steps, self.run.total_steps)
            self.status.object = status_text(self.run)

    def _poll(self) -> None:
        ended = self.run.finished is not None  # read first: the last refresh then sees everything
        self.refresh()
        if ended:
            self.dispose()

    def dispose(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.progress, self.status, self.live, sizing_mode="stretch_width")
