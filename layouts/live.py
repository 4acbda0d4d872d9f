"""Live plots of a GAN fit, fed by HoloViews streams.

Scalar metrics go into one bounded :class:`holoviews.streams.Buffer` (rows: member, step, metrics);
snapshots (QCF bands, histograms) are pushed through :class:`holoviews.streams.Pipe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd

__all__ = ["LivePlots", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("loss_g", "loss_d", "d_acc_real", "d_acc_fake")
BUFFER_LENGTH = 20_000  # rows kept in the browser-side plots; older rows scroll out
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]  # Category10


class LivePlots:
    """The live view of one problem: losses, accuracies, parameters, QCF bands, observables.

    Arguments:
        param_names, qcf_names, observable_names: the problem's names.
        truth: true parameter values (or ``None`` for real data).
    """

    def __init__(
        self,
        param_names: Sequence[str],
        qcf_names: Sequence[str],
        observable_names: Sequence[str],
        truth: Sequence[float] | None,
    ) -> None:
        self.param_names = list(param_names)
        self.qcf_names = list(qcf_names)
        self.observable_names = list(observable_names)
        self.truth = None if truth is None else list(truth)
        columns = ["member", "step", *METRIC_COLUMNS, *(f"param_{p}" for p in self.param_names)]
        self.metrics = hv.streams.Buffer(pd.DataFrame({c: [] for c in columns}), length=BUFFER_LENGTH, index=False)
        self.snapshot = hv.streams.Pipe(data={})

    # --- feeding --------------------------------------------------------------------------------

    def push_metrics(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            df = pd.DataFrame(rows)
            self.metrics.send(df[list(self.metrics.data.columns)])

    def push_snapshot(self, snapshots: dict[int, dict[str, Any]], hist_data: dict[str, Any] | None) -> None:
        self.snapshot.send({"members": snapshots, "data": hist_data})

    def clear(self) -> None:
        self.metrics.clear()
        self.snapshot.send({})

    # --- plots ----------------------------------------------------------------------------------

    def _curves(self, data: pd.DataFrame, columns: Sequence[str], ylabel: str) -> hv.Overlay:
        curves = []
        for m, df in data.groupby("member") if len(data) else []:
            for i, c in enumerate(columns):
                curves.append(
                    hv.Curve(df, "step", c, label=f"{c} · member {int(m)}").opts(
                        color=COLORS[i % len(COLORS)], line_dash=["solid", "dashed", "dotted", "dashdot"][int(m) % 4]
                    )
                )
        if not curves:
            curves = [hv.Curve([], "step", columns[0])]
        return hv.Overlay(curves).opts(
            ylabel=ylabel, legend_position="top_right", responsive=True, height=260, framewise=True
        )

    def losses(self) -> hv.DynamicMap:
        return hv.DynamicMap(lambda data: self._curves(data, ["loss_g", "loss_d"], "loss"), streams=[self.metrics])

    def accuracy(self) -> hv.DynamicMap:
        def plot(data: pd.DataFrame) -> hv.Overlay:
            o = self._curves(data, ["d_acc_real", "d_acc_fake"], "discriminator accuracy")
            return (o * hv.HLine(0.5).opts(color="gray", line_dash="dotted")).opts(ylim=(0, 1.05))

        return hv.DynamicMap(plot, streams=[self.metrics])

    def parameters(self) -> hv.DynamicMap:
        def plot(data: pd.DataFrame) -> hv.Layout:
            panels = []
            for i, p in enumerate(self.param_names):
                o = self._curves(data, [f"param_{p}"], p).opts(show_legend=False, height=180, framewise=True)
                if self.truth is not None:
                    o = o * hv.HLine(self.truth[i]).opts(color="black", line_dash="dashed")
                panels.append(o.opts(title=p))
            return hv.Layout(panels).cols(3).opts(shared_axes=False)

        return hv.DynamicMap(plot, streams=[self.metrics])

    def qcfs(self, qcf_true: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> hv.DynamicMap:
        def plot(data: dict[str, Any]) -> hv.Layout:
            panels = []
            members = (data or {}).get("members", {})
            for qi, q in enumerate(self.qcf_names):
                items = []
                for m, snap in sorted(members.items()):
                    x = np.asarray(snap["x"])
                    color = COLORS[int(m) % len(COLORS)]
                    lo, hi = np.asarray(snap["qcf_lo"])[qi], np.asarray(snap["qcf_hi"])[qi]
                    items.append(hv.Area((x, lo, hi), "x", ["lo", "hi"], label=f"68% band · member {m}").opts(
                        alpha=0.3, color=color, line_alpha=0))
                    items.append(hv.Curve((x, np.asarray(snap["qcf_mean"])[qi]), "x", q, label=f"mean · member {m}")
                                 .opts(color=color))
                if qcf_true is not None:
                    x, y = qcf_true[q]
                    items.append(hv.Curve((x, y), "x", q, label="truth").opts(color="black", line_dash="dashed"))
                if not items:
                    items = [hv.Curve([], "x", q)]
                panels.append(hv.Overlay(items).opts(title=f"{q}(x)", ylabel=f"{q}(x)", responsive=True, height=300,
                                                     legend_position="top_right", framewise=True))
            return hv.Layout(panels).cols(2).opts(shared_axes=False)

        return hv.DynamicMap(plot, streams=[self.snapshot])

    def observables(self) -> hv.DynamicMap:
        def plot(data: dict[str, Any]) -> hv.Layout:
            panels = []
            members = (data or {}).get("members", {})
            hist_data = (data or {}).get("data") or {}
            for oi, o in enumerate(self.observable_names):
                items = []
                if o in hist_data:
                    edges, dens = hist_data[o]
                    items.append(hv.Histogram((edges, dens), kdims=["x"], vdims=["density"], label="data").opts(
                        alpha=0.35, color="gray", line_alpha=0))
                    for m, snap in sorted(members.items()):
                        items.append(hv.Histogram((edges, np.asarray(snap["hist_gen"])[oi]), kdims=["x"],
                                                  vdims=["density"], label=f"generated · member {m}").opts(
                            fill_alpha=0, line_color=COLORS[int(m) % len(COLORS)], line_width=2))
                if not items:
                    items = [hv.Histogram(([0, 1], [0]), kdims=["x"], vdims=["density"])]
                panels.append(hv.Overlay(items).opts(title=f"{o}: data vs generated", responsive=True, height=300,
                                                     legend_position="top_right", framewise=True))
            return hv.Layout(panels).cols(2).opts(shared_axes=False)

        return hv.DynamicMap(plot, streams=[self.snapshot])
