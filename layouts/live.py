"""Live plots of a GAN fit, fed by HoloViews streams.

Every panel is its own DynamicMap (the page lays them out), so each keeps its own axis ranges
as data arrive; DynamicMaps combined into one ``hv.Layout`` keep their first frame's ranges.

Scalar metrics go into one bounded :class:`holoviews.streams.Buffer` per (member, rank) line on the
server. The metric panels (losses, accuracy, parameters) are Bokeh figures whose line sources receive
only the new rows of each push (``ColumnDataSource.stream`` with rollover at the Buffer's length): one
small message per line instead of redrawing whole curves. Drawing them through HoloViews overlays cost
about 200 ms of server time per update and session (an overlay re-evaluates every layer), which
saturated the server with two sessions on two cores; streaming into the sources costs about 1 ms.
Snapshots (QCF bands, histograms) are drawn by HoloViews DynamicMaps fed by a
:class:`holoviews.streams.Pipe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource, Span
from bokeh.plotting import figure

__all__ = ["MAX_DRAWN_MEMBERS", "MAX_DRAWN_RANKS", "LivePlots", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("loss_g", "loss_d", "d_acc_real", "d_acc_fake")
BUFFER_LENGTH = 5_000  # rows per curve kept on the server and in the browser; older rows scroll out
# Curves are drawn for the first members and ranks only: every member adds a dozen glyphs to each panel, and a
# 64-member page took 15 s of server time per session to build. The ensemble estimates use every member.
MAX_DRAWN_MEMBERS = 8
MAX_DRAWN_RANKS = 4
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]  # Category10


DASHES = ["solid", "dashed", "dotted", "dashdot"]  # one line style per ensemble member (or rank)


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
    ) -> None:
        self.total_members, self.total_ranks = members, ranks
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
        self.columns = ["step", *METRIC_COLUMNS, *(f"param_{p}" for p in self.param_names),
                        *(f"dev_{p}" for p in self.param_names)]
        empty = pd.DataFrame({c: np.zeros(0) for c in self.columns})
        self.buffers = {line: hv.streams.Buffer(empty.copy(), length=BUFFER_LENGTH, index=False)
                        for line in self.lines}
        self._sources: dict[tuple[int, int], ColumnDataSource] = {}  # per line, shared by the metric panels
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
                source.stream({c: rows[c].to_numpy() for c in self.columns}, rollover=BUFFER_LENGTH)

    def rows(self) -> pd.DataFrame:
        """Every line's buffered rows, with their member and rank (for tests and exports)."""
        frames = [b.data.assign(member=m, rank=r) for (m, r), b in self.buffers.items()]
        return pd.concat(frames, ignore_index=True)

    def push_snapshot(self, snapshots: dict[int, dict[str, Any]], hist_data: dict[str, Any] | None) -> None:
        self.snapshot.send({"members": snapshots, "data": hist_data})

    def clear(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        for source in self._sources.values():
            source.data = {c: np.zeros(0) for c in self.columns}
        self.snapshot.send({})

    # --- plots ----------------------------------------------------------------------------------

    def _source(self, line: tuple[int, int]) -> ColumnDataSource:
        """The line's Bokeh source (made once, from what its Buffer holds), shared by the metric panels."""
        if line not in self._sources:
            data = self.buffers[line].data
            self._sources[line] = ColumnDataSource({c: data[c].to_numpy() for c in self.columns})
        return self._sources[line]

    @staticmethod
    def _figure(ylabel: str, height: int = 260, title: str | None = None) -> Any:
        return figure(height=height, sizing_mode="stretch_width", x_axis_label="step", y_axis_label=ylabel,
                      title=title, tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="right")

    @staticmethod
    def _legend(fig: Any, location: str = "top_right", outside: bool = False) -> Any:
        fig.legend.click_policy = "hide"  # click an entry to hide its curve
        fig.legend.label_text_font_size = "9pt"
        if outside:
            fig.add_layout(fig.legend[0], "right")
        else:
            fig.legend.location = location
        return fig

    def _metric_figure(self, columns: Sequence[str], ylabel: str) -> Any:
        fig = self._figure(ylabel)
        several_ranks = self.total_ranks > 1
        for k, (m, r) in enumerate(self.lines):
            who = f"member {m} rank {r}" if several_ranks else f"member {m}"
            for i, c in enumerate(columns):
                fig.line("step", c, source=self._source((m, r)), legend_label=f"{c} · {who}",
                         color=COLORS[i % len(COLORS)], line_dash=DASHES[k % len(DASHES)], line_width=1.5)
        return self._legend(fig)

    def losses(self) -> Any:
        """Generator and discriminator losses per member (and rank): a Bokeh figure streaming new rows."""
        return self._metric_figure(["loss_g", "loss_d"], "loss")

    def accuracy(self) -> Any:
        """The discriminator's accuracy on real and generated events per member (and rank)."""
        fig = self._metric_figure(["d_acc_real", "d_acc_fake"], "discriminator accuracy")
        fig.y_range.start, fig.y_range.end = 0.0, 1.05
        fig.add_layout(Span(location=0.5, dimension="width", line_color="gray", line_dash="dotted"))
        return fig

    def parameters(self) -> Any:
        """All parameters in one panel: (mean − truth) / (hi − lo) per member (rank 0: the shared generator);
        closure is the line at 0."""
        ylabel = "(mean − truth) / range" if self.truth is not None else "mean / range"
        fig = self._figure(ylabel, height=320, title="Parameters vs truth")
        for m in self.members:
            for i, p in enumerate(self.param_names):
                fig.line("step", f"dev_{p}", source=self._source((m, 0)), legend_label=f"{p} · member {m}",
                         color=COLORS[i % len(COLORS)], line_dash=DASHES[m % len(DASHES)], line_width=1.5)
        fig.add_layout(Span(location=0.0, dimension="width", line_color="black", line_dash="dashed"))
        return self._legend(fig, outside=True)

    def qcfs(self, qcf_true: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> list[hv.DynamicMap]:
        """One panel per QCF: each member's mean and 68% band over its generator, the truth dashed."""

        def panel(qi: int, q: str) -> hv.DynamicMap:
            def plot(data: dict[str, Any]) -> hv.Overlay:
                items = []
                snaps = (data or {}).get("members", {})
                for m in self.members:
                    snap = snaps.get(m, _EMPTY_SNAPSHOT)
                    x = np.asarray(snap["x"])
                    color = COLORS[m % len(COLORS)]
                    lo, hi = _row(snap["qcf_lo"], qi), _row(snap["qcf_hi"], qi)
                    items.append(hv.Area((x, lo, hi), "x", ["lo", "hi"], label=f"68% band · member {m}").opts(
                        alpha=0.3, color=color, line_alpha=0, framewise=True))
                    items.append(hv.Curve((x, _row(snap["qcf_mean"], qi)), "x", "qcf", label=f"mean · member {m}")
                                 .opts(color=color, framewise=True))
                x, y = qcf_true[q] if qcf_true is not None else ([], [])
                items.append(hv.Curve((x, y), "x", "qcf", label="truth").opts(color="black", line_dash="dashed",
                                                                               framewise=True))
                return hv.Overlay(items).opts(
                    title=f"{q}(x)", ylabel=f"{q}(x)", responsive=True, height=300, legend_position="top_right",
                    framewise=True)

            return hv.DynamicMap(plot, streams=[self.snapshot])

        return [panel(i, q) for i, q in enumerate(self.qcf_names)]

    def observables(self) -> list[hv.DynamicMap]:
        """One panel per observable: the data histogram against each member's generated events."""

        def panel(oi: int, o: str) -> hv.DynamicMap:
            def plot(data: dict[str, Any]) -> hv.Overlay:
                hist_data = (data or {}).get("data") or {}
                snaps = (data or {}).get("members", {})
                edges, dens = hist_data.get(o, ([0.0, 1.0], [0.0]))
                items = [hv.Histogram((edges, dens), kdims=["x"], vdims=["density"], label="data").opts(
                    alpha=0.35, color="gray", line_alpha=0, framewise=True)]
                for m in self.members:
                    gen = _row(snaps[m]["hist_gen"], oi) if m in snaps and o in hist_data else np.zeros(len(dens))
                    items.append(hv.Histogram((edges, gen), kdims=["x"], vdims=["density"],
                                              label=f"generated · member {m}").opts(
                        fill_alpha=0, line_color=COLORS[m % len(COLORS)], line_width=2, framewise=True))
                return hv.Overlay(items).opts(title=f"{o}: data vs generated", responsive=True, height=300,
                                              legend_position="top_right", framewise=True)

            return hv.DynamicMap(plot, streams=[self.snapshot])

        return [panel(i, o) for i, o in enumerate(self.observable_names)]
