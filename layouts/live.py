"""Live plots of a GAN fit, fed by HoloViews streams.

Every panel is its own DynamicMap (the page lays them out), so each keeps its own axis ranges
as data arrive; DynamicMaps combined into one ``hv.Layout`` keep their first frame's ranges.

Scalar metrics go into one bounded :class:`holoviews.streams.Buffer` per (member, rank) line on the
server. The metric panels (losses, accuracy, parameters) are Bokeh figures whose line sources receive
only the new rows of each push (``ColumnDataSource.stream`` with rollover at the Buffer's length): one
small message per line instead of redrawing whole curves. Drawn through HoloViews overlays (an overlay
re-evaluates every layer) they saturated the server with two sessions on two cores; streaming into the
sources costs a fraction of that (docs/benchmarks.md, "Dashboard").
Snapshots (QCF bands, histograms) are drawn by HoloViews DynamicMaps fed by a
:class:`holoviews.streams.Pipe`.

Losses and accuracies are drawn twice, faint as reported and solid smoothed (TensorBoard's slider:
:func:`qcf_studio.layouts.smoothing.ema`); the smoothed columns travel in the same sources, computed as rows arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
from bokeh.models import BasicTickFormatter, ColumnDataSource, Span
from bokeh.plotting import figure

from qcf_studio.layouts.ranges import padded_range
from qcf_studio.layouts.smoothing import EmaState, ema

__all__ = ["DEFAULT_SMOOTHING", "MAX_DRAWN_MEMBERS", "MAX_DRAWN_RANKS", "LivePlots", "METRIC_COLUMNS"]

# What the runs report: a GAN fit its losses and accuracies, a likelihood fit (training.method: mle) its
# negative log-likelihood (the best so far, engine.mle.fit).
METRIC_COLUMNS = ("loss_g", "loss_d", "d_acc_real", "d_acc_fake", "nll")
# TensorBoard starts at 0.6; a default run's discriminator accuracy jumps across 0–1 from one report to the next,
# and 0.8 averages about 9 reports (90 steps of 3000) into a line that shows the trend.
DEFAULT_SMOOTHING = 0.8
BUFFER_LENGTH = 5_000  # rows per curve kept on the server and in the browser; older rows scroll out
# Curves are drawn for the first members and ranks only: every member adds a dozen glyphs to each panel, and a
# 64-member page took many seconds of server time per session to build. The ensemble estimates use every member.
MAX_DRAWN_MEMBERS = 8
MAX_DRAWN_RANKS = 4
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]  # Category10


DASHES = ["solid", "dashed", "dotted", "dashdot"]  # one line style per ensemble member (or rank)
# HoloViews panels' legends: beside the plot, small and muted, never over the curves.
SIDE_LEGEND: dict[str, Any] = {
    "legend_position": "right",
    "legend_opts": {"label_text_font_size": "8pt", "label_text_color": "#444444", "border_line_alpha": 0},
}


_EMPTY_SNAPSHOT: dict[str, Any] = {"x": [], "qcf_lo": None, "qcf_hi": None, "qcf_mean": None}


def _row(table: Any, i: int) -> np.ndarray:
    """Row ``i`` of a snapshot table (nested lists), or an empty row before the first snapshot."""
    return np.asarray(table)[i] if table is not None else np.zeros(0)


class LivePlots:
    """The live view of one problem: losses, accuracies, parameters, QCF bands, observables.

    Arguments:
        param_names, qcf_names, observable_names: the problem's names.
        truth: true parameter values (or ``None`` for real data).
        bounds: lower and upper bounds of the parameters (their range scales the parameter panel).
        members: ensemble members, of which the first :data:`MAX_DRAWN_MEMBERS` get curves; every overlay
            has the same elements in every frame (HoloViews updates a frame's data in place and cannot add
            elements later), empty until data arrive.
        ranks: data-parallel ranks per member; losses and accuracies get a curve per rank (each rank
            has its own discriminator; the first :data:`MAX_DRAWN_RANKS` are drawn), parameters and
            snapshots are rank 0's (the shared generator).
        method: ``gan`` (losses and discriminator accuracy) or ``mle`` (the negative log-likelihood).
        smoothing: the weight of :func:`qcf_studio.layouts.smoothing.ema` for losses and accuracies (0: raw).
    """

    def __init__(
        self,
        param_names: Sequence[str],
        qcf_names: Sequence[str],
        observable_names: Sequence[str],
        truth: Sequence[float] | None,
        members: int,
        bounds: tuple[Sequence[float], Sequence[float]],
        ranks: int = 1,
        method: str = "gan",
        smoothing: float = DEFAULT_SMOOTHING,
    ) -> None:
        self.total_members, self.total_ranks = members, ranks
        self.method, self.smoothing = method, smoothing
        self.members = list(range(min(members, MAX_DRAWN_MEMBERS)))  # those drawn
        # one loss curve per (member, rank) drawn
        self.lines = [(m, r) for m in self.members for r in range(min(ranks, MAX_DRAWN_RANKS))]
        self.lo, self.hi = list(bounds[0]), list(bounds[1])
        self.param_names = list(param_names)
        self.qcf_names = list(qcf_names)
        self.observable_names = list(observable_names)
        self.truth = None if truth is None else list(truth)
        self.span = [h - lo for lo, h in zip(self.lo, self.hi)]
        self.ref = self.truth if self.truth is not None else [0.0] * len(self.param_names)
        # Parameters are drawn as (mean − truth) / range, computed once as rows arrive (not per session and
        # redraw), so that each line's new rows go to the browser as they are.
        self.columns = [
            "step",
            *METRIC_COLUMNS,
            *(f"param_{p}" for p in self.param_names),
            *(f"dev_{p}" for p in self.param_names),
        ]
        empty = pd.DataFrame({c: np.zeros(0) for c in self.columns})
        self.buffers = {line: hv.streams.Buffer(empty.copy(), length=BUFFER_LENGTH, index=False) for line in self.lines}
        self._sources: dict[tuple[int, int], ColumnDataSource] = {}  # per line, shared by the metric panels
        self._ema: dict[tuple[int, int], dict[str, EmaState]] = {}  # per line with a source: where its EMAs are
        self.snapshot = hv.streams.Pipe(data={})

    # --- feeding --------------------------------------------------------------------------------

    def push_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rows ``{"member", "rank", "step", **metrics}``; each line's Buffer gets its own new rows."""
        if not rows:
            return
        df = pd.DataFrame(rows)
        if "rank" not in df:
            df["rank"] = 0
        for p, ref, span in zip(self.param_names, self.ref, self.span):
            if f"param_{p}" in df:
                df[f"dev_{p}"] = (df[f"param_{p}"] - ref) / span
        for (m, r), part in df.groupby(["member", "rank"], sort=False):
            line = (int(m), int(r))
            if line not in self.buffers:
                continue
            # What the run does not report is NaN: an MLE fit has no GAN losses, ranks > 0 no parameters.
            rows = part.reindex(columns=self.columns).astype(float)
            self.buffers[line].send(rows)
            source = self._sources.get(line)
            if source is not None:  # the browser gets the new rows only
                new = {c: rows[c].to_numpy() for c in self.columns}
                source.stream({**new, **self._smoothed(line, new)}, rollover=BUFFER_LENGTH)

    def rows(self) -> pd.DataFrame:
        """Every line's buffered rows, with their member and rank (for tests and exports)."""
        frames = [b.data.assign(member=m, rank=r) for (m, r), b in self.buffers.items()]
        return pd.concat(frames, ignore_index=True)

    def push_snapshot(self, snapshots: dict[int, dict[str, Any]], hist_data: dict[str, Any] | None) -> None:
        self.snapshot.send({"members": snapshots, "data": hist_data})

    def clear(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        for line in self._sources:
            self._resend(line)
        self.snapshot.send({})

    def set_smoothing(self, weight: float) -> None:
        """Smooth losses and accuracies with ``weight`` (0: raw); every drawn curve is recomputed once."""
        self.smoothing = weight
        for line in self._sources:
            self._resend(line)

    # --- plots ----------------------------------------------------------------------------------

    def _smoothed(self, line: tuple[int, int], new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``ema_<metric>`` of the line's new rows, continuing its curves."""
        state = self._ema.setdefault(line, {})
        out = {}
        for c in METRIC_COLUMNS:
            out[f"ema_{c}"], state[c] = ema(new[c], self.smoothing, state.get(c, (0.0, 0)))
        return out

    def _buffered(self, line: tuple[int, int]) -> dict[str, np.ndarray]:
        """What the line's Buffer holds, with its curves smoothed from their start."""
        data = self.buffers[line].data
        raw = {c: data[c].to_numpy() for c in self.columns}
        self._ema[line] = {}
        return {**raw, **self._smoothed(line, raw)}

    def _resend(self, line: tuple[int, int]) -> None:
        self._sources[line].data = self._buffered(line)

    def _source(self, line: tuple[int, int]) -> ColumnDataSource:
        """The line's Bokeh source (made once, from what its Buffer holds), shared by the metric panels."""
        if line not in self._sources:
            self._sources[line] = ColumnDataSource(self._buffered(line))
        return self._sources[line]

    @staticmethod
    def _figure(ylabel: str, height: int = 260, log: bool = False) -> Any:
        return figure(
            height=height,
            sizing_mode="stretch_width",
            x_axis_label="step",
            y_axis_label=ylabel,
            y_axis_type="log" if log else "linear",
            tools="pan,wheel_zoom,box_zoom,reset,save",
            toolbar_location="right",
        )

    @staticmethod
    def _legend(fig: Any) -> Any:
        """The legend beside the plot (never over the curves), small and muted; click an entry to hide it."""
        legend = fig.legend[0]
        legend.click_policy = "hide"
        legend.label_text_font_size = "8pt"
        legend.label_text_color = "#444444"
        legend.label_height = legend.glyph_height = 14
        legend.spacing, legend.padding, legend.margin = 0, 4, 4
        legend.border_line_alpha = 0
        legend.ncols = 1 + (len(legend.items) - 1) // 14  # a long legend in columns rather than cut off
        fig.add_layout(legend, "right")
        return fig

    def _metric_figure(self, columns: Sequence[str], ylabel: str, log: bool = False, smooth: bool = True) -> Any:
        """One smoothed curve per (member, rank, column), with the raw one faint behind it (``smooth``), or the
        raw curve alone."""
        fig = self._figure(ylabel, log=log)
        several_ranks = self.total_ranks > 1
        for k, (m, r) in enumerate(self.lines):
            who = f"member {m} rank {r}" if several_ranks else f"member {m}"
            for i, c in enumerate(columns):
                style = {
                    "source": self._source((m, r)),
                    "legend_label": f"{c} · {who}",
                    "color": COLORS[i % len(COLORS)],
                    "line_dash": DASHES[k % len(DASHES)],
                }
                if smooth:
                    fig.line("step", c, line_width=1, alpha=0.25, **style)
                fig.line("step", f"ema_{c}" if smooth else c, line_width=1.8, **style)
        return self._legend(fig)

    def losses(self, log: bool = False) -> Any:
        """Generator and discriminator losses per member (and rank), or a likelihood fit's negative
        log-likelihood: a Bokeh figure streaming new rows; ``log``: a logarithmic y axis.

        The likelihood fit reports the best value so far, not a noisy estimate: it is drawn as it is
        (smoothing would only make it lag), with whole numbers on the axis (it is of the order of the events).
        """
        if self.method == "mle":
            fig = self._metric_figure(["nll"], "negative log-likelihood (best so far)", log=log, smooth=False)
            fig.yaxis[0].formatter = BasicTickFormatter(use_scientific=False)
            return fig
        return self._metric_figure(["loss_g", "loss_d"], "loss", log=log)

    def accuracy(self) -> Any:
        """The discriminator's accuracy on real and generated events per member (and rank)."""
        fig = self._metric_figure(["d_acc_real", "d_acc_fake"], "discriminator accuracy")
        fig.y_range.start, fig.y_range.end = 0.0, 1.05
        fig.add_layout(Span(location=0.5, dimension="width", line_color="gray", line_dash="dotted"))
        return fig

    def parameters(self) -> Any:
        """All parameters in one panel: (mean − truth) / (hi − lo) per member (rank 0: the shared generator);
        closure is the line at 0. No title: the page's heading says what it shows."""
        ylabel = "(mean − truth) / range" if self.truth is not None else "mean / range"
        fig = self._figure(ylabel, height=320)
        for m in self.members:
            for i, p in enumerate(self.param_names):
                fig.line(
                    "step",
                    f"dev_{p}",
                    source=self._source((m, 0)),
                    legend_label=f"{p} · member {m}",
                    color=COLORS[i % len(COLORS)],
                    line_dash=DASHES[m % len(DASHES)],
                    line_width=1.5,
                )
        fig.add_layout(Span(location=0.0, dimension="width", line_color="black", line_dash="dashed"))
        return self._legend(fig)

    def qcfs(self, qcf_true: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> list[hv.DynamicMap]:
        """One panel per QCF: each member's mean and 68% band over its generator, the truth dashed.

        The y axis holds the whole truth and every band (:func:`qcf_studio.layouts.ranges.padded_range`). Each QCF has
        its own value dimension: Panel links the axes of panels sharing a dimension name, and the last one
        redrawn set the range of all (u(x) was cut at d(x)'s maximum).
        """

        def panel(qi: int, q: str) -> hv.DynamicMap:
            value = hv.Dimension(f"qcf_{q}", label=f"{q}(x)")

            def plot(data: dict[str, Any]) -> hv.Overlay:
                items, shown = [], []
                snaps = (data or {}).get("members", {})
                for m in self.members:
                    snap = snaps.get(m, _EMPTY_SNAPSHOT)
                    x = np.asarray(snap["x"])
                    color = COLORS[m % len(COLORS)]
                    lo, hi, mean = (_row(snap[k], qi) for k in ("qcf_lo", "qcf_hi", "qcf_mean"))
                    shown += [lo, hi, mean]
                    items.append(
                        hv.Area((x, lo, hi), "x", [value, f"qcf_{q}_hi"], label=f"68% band · member {m}").opts(
                            alpha=0.3, color=color, line_alpha=0, framewise=True
                        )
                    )
                    items.append(
                        hv.Curve((x, mean), "x", value, label=f"mean · member {m}").opts(color=color, framewise=True)
                    )
                x, y = qcf_true[q] if qcf_true is not None else ([], [])
                items.append(
                    hv.Curve((x, y), "x", value, label="truth").opts(color="black", line_dash="dashed", framewise=True)
                )
                return hv.Overlay(items).opts(
                    title=f"{q}(x)",
                    responsive=True,
                    height=300,
                    ylim=padded_range(*shown, y),
                    framewise=True,
                    **SIDE_LEGEND,
                )

            return hv.DynamicMap(plot, streams=[self.snapshot])

        return [panel(i, q) for i, q in enumerate(self.qcf_names)]

    def observables(self) -> list[hv.DynamicMap]:
        """One panel per observable: the data histogram against each member's generated events."""

        def panel(oi: int, o: str) -> hv.DynamicMap:
            value = hv.Dimension(f"density_{o}", label="density")  # its own: not linked to other observables

            def plot(data: dict[str, Any]) -> hv.Overlay:
                hist_data = (data or {}).get("data") or {}
                snaps = (data or {}).get("members", {})
                edges, dens = hist_data.get(o, ([0.0, 1.0], [0.0]))
                items = [
                    hv.Histogram((edges, dens), kdims=["x"], vdims=[value], label="data").opts(
                        alpha=0.35, color="gray", line_alpha=0, framewise=True
                    )
                ]
                for m in self.members:
                    gen = _row(snaps[m]["hist_gen"], oi) if m in snaps and o in hist_data else np.zeros(len(dens))
                    items.append(
                        hv.Histogram((edges, gen), kdims=["x"], vdims=[value], label=f"generated · member {m}").opts(
                            fill_alpha=0, line_color=COLORS[m % len(COLORS)], line_width=2, framewise=True
                        )
                    )
                # Titled by the observable alone: the page's heading says "data vs generated events".
                return hv.Overlay(items).opts(title=o, responsive=True, height=300, framewise=True, **SIDE_LEGEND)

            return hv.DynamicMap(plot, streams=[self.snapshot])

        return [panel(i, o) for i, o in enumerate(self.observable_names)]
