"""The page: its template (a header, a collapsible sidebar, the main area) and the live view's layout, shared by
the dashboard (a run in progress) and the runs browser (a finished run)."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import panel as pn

from qcf_studio.layouts.live import LivePlots
from qcf_studio.layouts.results import QcfCurves

__all__ = ["PRODUCT", "grid", "live_panels", "metric_panels", "page_template"]

PRODUCT = "qcf-studio"  # the header's title and the browser tab's
SIDEBAR_WIDTH = 460  # px: the spec form's cards and the YAML editor, without a horizontal scroll bar


class _Template(pn.template.VanillaTemplate):
    _resources = {"css": {}}  # type: ignore[assignment]  # VanillaTemplate's own: Lato from Google's font server


def page_template(
    header: list[pn.viewable.Viewable], sidebar: list[pn.viewable.Viewable], main: list[pn.viewable.Viewable]
) -> pn.template.BootstrapTemplate:
    """The page: the product's name and ``header`` in a bar across the top, ``sidebar`` (the spec and the run
    controls) on the left, collapsed and expanded by the bar's toggle, and ``main`` (the tabs) filling the rest.

    Bootstrap's template, not Fast's: its CSS, JavaScript and fonts all come from Panel's bundle, served by this
    server (Fast's fetches a font from Google), and it loads less before the page can show anything.
    """
    return _Template(title=PRODUCT, header=header, sidebar=sidebar, main=main, sidebar_width=SIDEBAR_WIDTH)


def grid(panels: list[hv.DynamicMap], ncols: int) -> pn.GridBox:
    return pn.GridBox(
        *(pn.pane.HoloViews(p, sizing_mode="stretch_width") for p in panels), ncols=ncols, sizing_mode="stretch_width"
    )


def metric_panels(plots: LivePlots) -> pn.Column:
    """The training curves with their controls, as TensorBoard has them: a smoothing slider (0: raw) and a
    logarithmic y axis for the losses, the discriminator's accuracy beside them. A likelihood fit (MLE) has its
    negative log-likelihood alone: the best value so far, neither noisy nor positive (no slider, no log axis)."""
    losses = pn.pane.Bokeh(plots.losses(), sizing_mode="stretch_width", name="losses")
    if plots.method == "mle":
        return pn.Column(pn.Row(losses, sizing_mode="stretch_width"), sizing_mode="stretch_width")
    smoothing = pn.widgets.FloatSlider(
        label="Smoothing", start=0.0, end=0.99, step=0.01, value=plots.smoothing, width=220, css_classes=["smoothing"]
    )
    # On release only: each change recomputes and resends every curve once.
    smoothing.param.watch(lambda e: plots.set_smoothing(e.new), "value_throttled")
    log = pn.widgets.Checkbox(label="log scale (losses)", value=False, css_classes=["loss-log"], align="end")

    def set_log(event: Any) -> None:
        losses.object = plots.losses(log=event.new)

    log.param.watch(set_log, "value")
    accuracy = pn.pane.Bokeh(plots.accuracy(), sizing_mode="stretch_width", name="accuracy")
    return pn.Column(
        pn.Row(smoothing, log, css_classes=["curve-controls"]),
        pn.Row(losses, accuracy, sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )


def live_panels(plots: LivePlots, qcf_true: QcfCurves | None, two_d: bool) -> list[pn.viewable.Viewable]:
    """Losses and accuracy, parameters, QCF bands (x-projections in 2D) and observables, top to bottom."""
    note = []
    if plots.total_members > len(plots.members) or plots.total_ranks > len({r for _, r in plots.lines}):
        ranks = len({r for _, r in plots.lines})
        note = [
            pn.pane.Markdown(
                f"Curves of members 0–{len(plots.members) - 1} of {plots.total_members}"
                + (f" (ranks 0–{ranks - 1} of {plots.total_ranks})" if plots.total_ranks > ranks else "")
                + " are drawn; heat maps, estimates and the closure report use every member.",
                css_classes=["drawn-members"],
            )
        ]
    return [
        *note,
        metric_panels(plots),
        pn.pane.Markdown(
            "### Parameters: the fit's estimate against the truth"
            if plots.method == "mle"
            else "### Parameters: mean of the generator's distribution against the truth"
        ),
        pn.pane.Bokeh(plots.parameters(), sizing_mode="stretch_width", name="parameters"),
        pn.pane.Markdown(
            (
                "### QCFs: the fit's 68% band vs truth"
                if plots.method == "mle"
                else "### QCFs: 68% band over the generator's parameters vs truth"
            )
            + (" (projected onto x: ∫ dy)" if two_d else "")
        ),
        grid(plots.qcfs(qcf_true), ncols=2),
        pn.pane.Markdown("### Observables: data vs generated events"),
        grid(plots.observables(), ncols=2),
    ]
