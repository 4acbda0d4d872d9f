"""Panel views of finished runs: the runs browser and the comparison of several runs.

Thin on purpose: what is listed comes from :mod:`qcf_studio.app.catalog`, what is drawn from :mod:`layouts`.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import holoviews as hv
import pandas as pd
import panel as pn
import param
import xarray as xr

from qcf_studio.app.catalog import NotARunError, RunInfo, list_runs, load_run
from qcf_studio.app.dashboard.markup import md_block, md_code, md_text
from qcf_studio.app.export.report import report_markdown
from qcf_studio.app.export.run import (
    DOWNLOADS,
    download_filename,
    download_refusal,
    export_download,
    markdown_to_html,
)
from qcf_studio.engine.results import closure_summary
from qcf_studio.layouts.compare import DISPLAY_COLUMNS, compare_qcfs, parameter_display, parameter_table
from qcf_studio.layouts.heatmaps import observable_heatmaps, results_heatmaps
from qcf_studio.layouts.page import live_panels
from qcf_studio.layouts.results import replay

__all__ = ["RunsBrowser", "CompareView", "REFRESH_MS", "runs_frame", "run_panels"]

REFRESH_MS = 5000  # how often the views look for new runs (list_runs re-reads only changed files)
TABLE_COLUMNS = ["name", "problem", "method", "status", "duration", "closure", "members", "mode", "modified", "error"]


def runs_frame(infos: list[RunInfo]) -> pd.DataFrame:
    """The runs table's rows (one per :class:`RunInfo`, in order; ``duration`` in seconds)."""
    return pd.DataFrame(
        [
            {
                "name": r.name,
                "problem": r.problem,
                "method": r.method,
                "status": r.status,
                "duration": round(r.wall_seconds, 1),
                "closure": r.closure,
                "members": r.members,
                "mode": r.mode,
                "modified": r.modified.strftime("%Y-%m-%d %H:%M:%S"),
                "error": r.error,
            }
            for r in infos
        ],
        columns=TABLE_COLUMNS,
    )


def _summary(ds: xr.Dataset, path: Path) -> str:
    """The run's heading as Markdown; every value from the file is escaped (a file may come from anyone)."""
    a = ds.attrs
    text = (
        f"### {md_text(path.stem)}\n{md_code(path)} — {md_text(a.get('problem', '?'), 80)}, "
        f"{md_text(a.get('method', '?'), 80)}, **{md_text(a.get('status', '?'), 80)}**, "
        f"{float(a.get('wall_seconds', float('nan'))):.1f} s, {ds.sizes['member']} member(s)"
    )
    if "closure_passed" in a:
        text += f"\n\n{md_text(closure_summary(a), 0)}"
    if a.get("errors"):
        text += f"\n\n{md_block(a['errors'])}"
    return text


def downloads(path: Path, ds: xr.Dataset) -> pn.Column:
    """A button per export of :data:`qcf_studio.app.export.run.DOWNLOADS` of the run ``ds`` read from ``path`` (made
    when clicked, on the server); one that cannot be made for this run is disabled, and a line below says why."""
    refusals = {label: download_refusal(ds, path, label) for label in DOWNLOADS}

    def button(label: str) -> pn.widgets.FileDownload:
        return pn.widgets.FileDownload(
            callback=lambda: io.BytesIO(export_download(path, label)[1]),
            filename=download_filename(path, label),
            label=label,
            width=170,
            color="light",
            disabled=refusals[label] is not None,
            css_classes=["download"],
        )

    why = [f"- {md_text(label)}: {md_text(text, 400)}" for label, text in refusals.items() if text]
    return pn.Column(
        pn.FlexBox(*(button(label) for label in DOWNLOADS), css_classes=["run-downloads"]),
        pn.pane.Markdown("\n".join(why), visible=bool(why), css_classes=["downloads-refused"]),
        sizing_mode="stretch_width",
    )


def run_panels(path: Path) -> list[pn.viewable.Viewable]:
    """A finished run as the live view showed it, its closure report and downloads, heat maps for 2D problems."""
    ds = load_run(path)
    plots, qcf_true = replay(ds)
    two_d = "y" in ds["qcf_pred"].dims
    # The report's Markdown holds names and messages from the file: the export's converter escapes all of it.
    report = pn.Card(
        pn.pane.HTML(markdown_to_html(report_markdown(ds)), sizing_mode="stretch_width"),
        title="Closure report",
        collapsed=False,
        sizing_mode="stretch_width",
        css_classes=["closure-report"],
    )
    items: list[pn.viewable.Viewable] = [
        pn.pane.Markdown(_summary(ds, path), sizing_mode="stretch_width"),
        downloads(path, ds),
        report,
        *live_panels(plots, qcf_true, two_d),
    ]
    if two_d:
        items += [
            pn.pane.Markdown("### 2D QCFs: predicted | true | predicted / true, projections with ±1σ"),
            pn.pane.HoloViews(results_heatmaps(ds), name="qcf-heatmaps"),
            pn.pane.Markdown("### Observables: data vs generated (2D histograms per data set)"),
            pn.pane.HoloViews(observable_heatmaps(ds), name="observable-heatmaps"),
        ]
    return items


class RunsBrowser(pn.viewable.Viewer):
    """Every run in the runs directory; selecting a row opens it (the last one selected) below the table."""

    selected = param.List(default=[], doc="paths of the selected runs")

    def __init__(self, runs_dir: str | Path, period_ms: int | None = REFRESH_MS, **params: Any) -> None:
        super().__init__(**params)
        self.runs_dir = Path(runs_dir)
        self.runs: list[RunInfo] = []
        self.table = pn.widgets.Tabulator(
            runs_frame([]),
            css_classes=["runs-table"],
            selectable="checkbox",
            disabled=True,
            show_index=False,
            pagination="local",
            page_size=20,
            sizing_mode="stretch_width",
        )
        self.refresh_button = pn.widgets.Button(label="Refresh", width=100)
        self.refresh_button.on_click(lambda _: self.refresh())
        self.message = pn.pane.Alert(
            "", alert_type="danger", visible=False, sizing_mode="stretch_width", css_classes=["runs-error"]
        )
        self.plot_area = pn.Column(sizing_mode="stretch_width", css_classes=["run-plots"])
        self.opened: Path | None = None
        self._syncing = False  # selection set by refresh(), not by the user
        self.table.param.watch(self._on_selection, "selection")
        self.refresh()
        self._callback = pn.state.add_periodic_callback(self.refresh, period=period_ms) if period_ms else None

    def refresh(self) -> None:
        """Re-list the directory; the table changes only when a run was added, removed or rewritten."""
        runs = list_runs(self.runs_dir)
        if runs == self.runs:
            return
        selected = set(self.selected)
        self.runs = runs
        self._syncing = True
        try:
            self.table.value = runs_frame(runs)
            self.table.selection = [i for i, r in enumerate(runs) if r.path in selected]
        finally:
            self._syncing = False
        self.selected = [r.path for r in runs if r.path in selected]

    def _on_selection(self, event: Any) -> None:
        if self._syncing:
            return
        previous = set(event.old or [])
        self.selected = [self.runs[i].path for i in event.new if i < len(self.runs)]
        added = [i for i in event.new if i not in previous and i < len(self.runs)]
        if added:
            self.open(self.runs[added[-1]].path)

    def open(self, path: str | Path) -> None:
        """Show the run at ``path`` below the table (replayed live plots; heat maps in 2D)."""
        path = Path(path)
        try:
            items = run_panels(path)
        except (NotARunError, OSError) as e:
            self.message.object = f"**Cannot open {md_text(path.name)}**: {md_text(e)}"
            self.message.visible = True
            return
        except Exception as e:  # noqa: BLE001 (a file the checks let through and the plots cannot draw)
            self.message.object = (
                f"**Cannot open {md_text(path.name)}**: its contents cannot be drawn ({md_text(type(e).__name__)})"
            )
            self.message.visible = True
            return
        self.message.visible = False
        self.opened = path
        self.plot_area[:] = items

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(pn.pane.Markdown(f"## Runs in `{self.runs_dir}`"), self.refresh_button),
            self.table,
            self.message,
            self.plot_area,
            sizing_mode="stretch_width",
        )

    def dispose(self) -> None:
        if self._callback is not None:
            self._callback.stop()


class CompareView(pn.viewable.Viewer):
    """Pick two or more runs of one problem: overlaid QCFs with ratio panels and a parameter table."""

    def __init__(self, runs_dir: str | Path, period_ms: int | None = REFRESH_MS, **params: Any) -> None:
        super().__init__(**params)
        self.runs_dir = Path(runs_dir)
        self.picker = pn.widgets.MultiChoice(
            label="Runs to compare", options={}, css_classes=["compare-picker"], sizing_mode="stretch_width"
        )
        self.message = pn.pane.Alert(
            "Pick at least two runs of the same problem.",
            alert_type="info",
            sizing_mode="stretch_width",
            css_classes=["compare-message"],
        )
        self.plot_area = pn.Column(sizing_mode="stretch_width", css_classes=["compare-plots"])
        self.table = pn.widgets.Tabulator(
            parameter_table({}),
            css_classes=["compare-table"],
            disabled=True,
            show_index=False,
            sizing_mode="stretch_width",
            text_align={c: "right" for c in DISPLAY_COLUMNS},
            visible=False,
        )
        self._loaded: dict[Path, tuple[float, xr.Dataset]] = {}  # path -> (mtime, Dataset)
        self.picker.param.watch(lambda _: self.update(), "value")
        self.refresh()
        self._callback = pn.state.add_periodic_callback(self.refresh, period=period_ms) if period_ms else None

    def refresh(self) -> None:
        """Offer every readable run (newest first), keeping the current picks that still exist."""
        # Labels escaped: the picker (Choices.js in Bokeh) renders them as HTML, and file names are anyone's.
        options = {html.escape(r.name): str(r.path) for r in list_runs(self.runs_dir) if not r.error}
        if options != self.picker.options:
            self.picker.options = options
            self.picker.value = [v for v in self.picker.value if v in options.values()]

    def _dataset(self, path: Path) -> xr.Dataset:
        mtime = path.stat().st_mtime
        cached = self._loaded.get(path)
        if cached is None or cached[0] != mtime:
            self._loaded[path] = cached = (mtime, load_run(path))
        return cached[1]

    def _fail(self, text: str, kind: str = "danger") -> None:
        self.message.object, self.message.alert_type, self.message.visible = text, kind, True
        self.plot_area[:] = []
        self.table.visible = False

    def update(self) -> None:
        paths = [Path(v) for v in self.picker.value]
        if len(paths) < 2:
            self._fail("Pick at least two runs of the same problem.", "info")
            return
        try:
            datasets = {p.stem: self._dataset(p) for p in paths}
            panels = compare_qcfs(datasets)
        except (NotARunError, ValueError, OSError) as e:
            self._fail(f"**These runs cannot be compared**: {md_text(e)}")
            return
        self.message.visible = False
        self.plot_area[:] = [pn.pane.HoloViews(p, sizing_mode="stretch_width") for p in panels]
        self.table.value = parameter_display(parameter_table(datasets))
        self.table.visible = True

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("## Compare runs"),
            self.picker,
            self.message,
            self.plot_area,
            pn.pane.Markdown("### Parameters: estimates, pulls, GAN/MLE error ratio"),
            self.table,
            sizing_mode="stretch_width",
        )

    def dispose(self) -> None:
        if self._callback is not None:
            self._callback.stop()


hv.extension("bokeh", logo=False)
