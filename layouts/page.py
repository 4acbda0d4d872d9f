"""The live view's page layout, shared by the dashboard (a run in progress) and the runs browser (a finished run)."""

from __future__ import annotations

import holoviews as hv
import panel as pn

from layouts.live import LivePlots
from layouts.results import QcfCurves

__all__ = ["grid", "live_panels"]


def grid(panels: list[hv.DynamicMap], ncols: int) -> pn.GridBox:
    return pn.GridBox(*(pn.pane.HoloViews(p, sizing_mode="stretch_width") for p in panels), ncols=ncols,
                      sizing_mode="stretch_width")


def live_panels(plots: LivePlots, qcf_true: QcfCurves | None, two_d: bool) -> list[pn.viewable.Viewable]:
    """Losses and accuracy, parameters, QCF bands (x-projections in 2D) and observables, top to bottom."""
    note = []
    if plots.total_members > len(plots.members) or plots.total_ranks > len({r for _, r in plots.lines}):
        ranks = len({r for _, r in plots.lines})
        note = [pn.pane.Markdown(
            f"Curves of members 0–{len(plots.members) - 1} of {plots.total_members}"
            + (f" (ranks 0–{ranks - 1} of {plots.total_ranks})" if plots.total_ranks > ranks else "")
            + " are drawn; heat maps, estimates and the closure report use every member.",
            css_classes=["drawn-members"])]
    return [*note,
        pn.Row(pn.pane.Bokeh(plots.losses(), sizing_mode="stretch_width", name="losses"),
               pn.pane.Bokeh(plots.accuracy(), sizing_mode="stretch_width", name="accuracy")),
        pn.pane.Markdown("### Parameters: mean of the generator's distribution against the truth"),
        pn.pane.Bokeh(plots.parameters(), sizing_mode="stretch_width", name="parameters"),
        pn.pane.Markdown("### QCFs: 68% band over the generator's parameters vs truth"
                         + (" (projected onto x: ∫ dy)" if two_d else "")),
        grid(plots.qcfs(qcf_true), ncols=2),
        pn.pane.Markdown("### Observables: data vs generated events"),
        grid(plots.observables(), ncols=2),
    ]
