"""Live plots of a GAN fit, fed by HoloViews streams.

Every panel is its own DynamicMap (the page lays them out), so each keeps its own axis ranges
as data arrive; DynamicMaps combined into one ``hv.Layout`` keep their first frame's ranges.

Scalar metrics go into one bounded :class:`holoviews.streams.Buffer` per (member, rank) line, and each
curve is a DynamicMap returning that Buffer's own frame, so Bokeh receives only the new rows
(``ColumnDataSource.stream`` with rollover at the Buffer's length) instead of whole curves. Snapshots
(QCF bands, histograms) are pushed through :class:`holoviews.streams.Pipe`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd

__all__ = ["LivePlots", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("loss_g", "loss_d", "d_acc_real", "d_acc_fake")
BUFFER_LENGTH = 5_000  # rows per curve kept on the server and in the browser; older rows scroll out
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
        members: ensemble members; every overlay has the same elements in every frame (HoloViews
            updates a frame's data in place and cannot add elements later), empty until data arrive.
        ranks: data-parallel ranks per member; losses and accuracies get a curve per rank (each rank
            has its own discriminator), parameters and snapshots are rank 0's (the shared generator).
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
        self.members = list(range(members))
        self.lines = [(m, r) for m in self.members for r in range(ranks)]  # one loss curve per (member, rank)
        self.lo, self.hi = list(bounds[0]), list(bounds[1])
        self.param_names = list(param_names)
        self.qcf_names = list(qcf_names)
        self.observable_names = list(observable_names)
        self.truth = None if truth is None else list(truth)
        self.span = [h - lo for lo, h in zip(self.lo, self.hi)]
        self.ref = self.truth if self.truth is not None else [0.0] * len(self.param_names)
        # Parameters are drawn as (mean − truth) / range, computed as rows arrive, so that every curve's data
        # is its Buffer's frame (the condition for HoloViews to stream only new rows to the browser).
        self.columns = ["step", *METRIC_COLUMNS, *(f"param_{p}" for p in self.param_names),
                        *(f"dev_{p}" for p in self.param_names)]
        empty = pd.DataFrame({c: np.zeros(0) for c in self.columns})
        self.buffers = {line: hv.streams.Buffer(empty.copy(), length=BUFFER_LENGTH, index=False)
                        for line in self.lines}
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
            buffer = self.buffers.get((int(m), int(r)))
            if buffer is not None:
                # What the run does not report is NaN: an MLE fit has no GAN losses, ranks > 0 no parameters.
                buffer.send(part.reindex(columns=self.columns).astype(float))

    def rows(self) -> pd.DataFrame:
        """Every line's buffered rows, with their member and rank (for tests and exports)."""
        frames = [b.data.assign(member=m, rank=r) for (m, r), b in self.buffers.items()]
        return pd.concat(frames, ignore_index=True)

    def push_snapshot(self, snapshots: dict[int, dict[str, Any]], hist_data: dict[str, Any] | None) -> None:
        self.snapshot.send({"members": snapshots, "data": hist_data})

    def clear(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        self.snapshot.send({})

    # --- plots ----------------------------------------------------------------------------------

    def _line(self, line: tuple[int, int], column: str, label: str, **style: Any) -> hv.DynamicMap:
        """One curve of one (member, rank): its Buffer's frame as it is, so Bokeh streams the new rows."""
        buffer = self.buffers[line]
        return hv.DynamicMap(lambda data: hv.Curve(data, "step", column, label=label).opts(**style),
                             streams=[buffer])

    def _metric_lines(self, columns: Sequence[str]) -> list[hv.DynamicMap]:
        several_ranks = len(self.lines) > len(self.members)
        out = []
        for k, (m, r) in enumerate(self.lines):
            who = f"member {m} rank {r}" if several_ranks else f"member {m}"
            for i, c in enumerate(columns):
                out.append(self._line((m, r), c, f"{c} · {who}", color=COLORS[i % len(COLORS)],
                                      line_dash=DASHES[k % len(DASHES)]))
        return out

    @staticmethod
    def _overlay(items: list[Any], **opts: Any) -> hv.DynamicMap:
        return functools.reduce(operator.mul, items).opts(
            legend_position="top_right", responsive=True, height=260, **opts)

    def losses(self) -> hv.DynamicMap:
        return self._overlay(self._metric_lines(["loss_g", "loss_d"]), ylabel="loss")

    def accuracy(self) -> hv.DynamicMap:
        half = hv.HLine(0.5).opts(color="gray", line_dash="dotted")
        return self._overlay([*self._metric_lines(["d_acc_real", "d_acc_fake"]), half],
                             ylabel="discriminator accuracy", ylim=(0, 1.05))

    def parameters(self) -> hv.DynamicMap:
        """All parameters in one panel: (mean − truth) / (hi − lo) per member (rank 0: the shared generator);
        closure is the line at 0."""
        curves = [self._line((m, 0), f"dev_{p}", f"{p} · member {m}", color=COLORS[i % len(COLORS)],
                             line_dash=DASHES[m % len(DASHES)])
                  for m in self.members for i, p in enumerate(self.param_names)]
        zero = hv.HLine(0.0).opts(color="black", line_dash="dashed")
        ylabel = "(mean − truth) / range" if self.truth is not None else "mean / range"
        return self._overlay([*curves, zero], ylabel=ylabel, title="Parameters vs truth").opts(
            legend_position="right", height=320)

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
