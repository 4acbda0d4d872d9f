"""The dashboard's Campaign tab: start a closure campaign of the spec in the editor, watch its pulls, coverage,
R_bv and ξ_1σ fill in as fits finish, read the verdicts, open single fits, reopen and export past campaigns.

Thin: the campaign runs in :class:`qcf_studio.app.dashboard.campaigns.CampaignManager` (shared by every session, polled
here),
past campaigns come from :mod:`qcf_studio.app.campaign_files`, plots from :mod:`qcf_studio.layouts.campaign`, exports
from
:mod:`qcf_studio.app.export.campaign`. Every text from a file goes through :mod:`qcf_studio.app.dashboard.markup` before
it is Markdown.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import holoviews as hv
import panel as pn
import xarray as xr

from qcf_studio.app.campaign_files import NotACampaignError, fit_path, list_campaigns, open_campaign
from qcf_studio.app.dashboard.campaigns import CampaignManager, LiveCampaign
from qcf_studio.app.dashboard.markup import md_block, md_code, md_text
from qcf_studio.app.dashboard.runs import RunBusyError
from qcf_studio.app.export.campaign import CAMPAIGN_DOWNLOADS, campaign_download, campaign_download_name
from qcf_studio.engine.spec import LimitsSpec, Spec, SpecError, parse_spec
from qcf_studio.layouts.campaign import campaign_plots, fits_table, plotted_fits, verdict_table

__all__ = ["CampaignView"]

POLL_MS = 500  # as the Live tab; the summary itself changes at most once a second
REFRESH_POLLS = 10  # the list of campaigns in the runs directory: every 10 polls (5 s)
_NONE = "(pick a campaign)"


class CampaignView(pn.viewable.Viewer):
    """One session's Campaign tab. ``get_spec()`` validates the editor's spec (``None`` if invalid),
    ``open_fit(path)`` shows a fit's results file in the Runs tab; plots update while ``is_shown()``."""

    def __init__(
        self,
        campaigns: CampaignManager,
        get_spec: Callable[[], Spec | None],
        open_fit: Callable[[Path], None],
        is_shown: Callable[[], bool] = lambda: True,
        period_ms: int | None = POLL_MS,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.campaigns, self.get_spec, self.open_fit, self.is_shown = campaigns, get_spec, open_fit, is_shown
        self.replicas = pn.widgets.IntInput(label="Replicas", value=50, start=2, width=110)
        self.truths = pn.widgets.RadioButtonGroup(label="Truths", options=["fixed", "prior"], value="fixed", width=150)
        self.methods = pn.widgets.CheckBoxGroup(label="Methods", options=["gan", "mle"], value=["gan"], inline=True)
        self.start_button = pn.widgets.Button(label="Start campaign", color="primary", width=150)
        self.stop_button = pn.widgets.Button(label="Stop campaign", color="danger", width=150, disabled=True)
        self.start_button.on_click(self._on_start)
        self.stop_button.on_click(lambda _: self.campaigns.stop())
        self.message = pn.pane.Alert(
            "", alert_type="danger", visible=False, sizing_mode="stretch_width", css_classes=["campaign-error"]
        )
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("No campaign yet.", css_classes=["campaign-status"], sizing_mode="stretch_width")
        self.picker = pn.widgets.Select(
            label="Campaigns in the runs directory", options=[_NONE], width=520, css_classes=["campaign-picker"]
        )
        self.picker.param.watch(self._on_pick, "value")
        self.heading = pn.pane.Markdown("", css_classes=["campaign-heading"], sizing_mode="stretch_width")
        self.plotted = pn.pane.Markdown("", css_classes=["campaign-plotted"], sizing_mode="stretch_width")
        self.downloads = pn.FlexBox(
            *(self._download(label) for label in CAMPAIGN_DOWNLOADS), css_classes=["campaign-downloads"], visible=False
        )
        self.criteria = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["campaign-criteria"])
        self.verdicts = pn.widgets.Tabulator(
            css_classes=["campaign-verdicts"],
            disabled=True,
            show_index=False,
            sizing_mode="stretch_width",
        )
        self.fits = pn.widgets.Tabulator(
            css_classes=["campaign-fits"],
            disabled=True,
            selectable=1,
            show_index=False,
            pagination="local",
            page_size=15,
            sizing_mode="stretch_width",
        )
        self.fits.param.watch(self._on_fit, "selection")
        self.plot_area = pn.Column(sizing_mode="stretch_width", css_classes=["campaign-plots"])
        self._live: LiveCampaign | None = None
        self._following_live = False  # showing the manager's campaign (not one reopened from disk)
        self._drawn_version = -1
        self._was_active = False
        self._ds: xr.Dataset | None = None
        self._folder: Path | None = None
        self._shape: tuple | None = None
        self._pipe: hv.streams.Pipe | None = None
        self._polls = 0
        self._syncing = False
        self._prefilled: object = None
        self.refresh_list()
        if campaigns.current is not None:  # a new session joins the campaign in progress (or the last one)
            self._attach(campaigns.current)
        self._callback = pn.state.add_periodic_callback(self._poll, period=period_ms) if period_ms else None

    # --- form --------------------------------------------------------------------------------

    def prefill(self, spec: Spec) -> None:
        """Show the campaign section of the editor's spec (or, without one, its training method) in the form,
        whenever that changed; the user's edits in the form stand until then."""
        c = spec.campaign
        key = (c.replicas, c.truths, tuple(c.methods)) if c is not None else ("default", spec.training.method)
        if key == self._prefilled:
            return
        self._prefilled = key
        if c is not None:
            self.replicas.value, self.truths.value, self.methods.value = c.replicas, c.truths, list(c.methods)
        else:
            self.methods.value = [spec.training.method]

    def campaign_spec(self) -> Spec:
        """The editor's spec with the form's campaign section; :class:`SpecError` when either is invalid."""
        spec = self.get_spec()
        if spec is None:
            raise SpecError("spec", "the spec in the editor is invalid; the message beside it says why")
        raw = spec.to_dict()
        section = dict(raw.get("campaign") or {})
        section.update(
            replicas=int(self.replicas.value or 0), truths=self.truths.value, methods=list(self.methods.value)
        )
        if section["truths"] == "fixed":
            section.pop("prior_bounds", None)
        raw["campaign"] = section
        return parse_spec(raw, max_limits=LimitsSpec())  # as the page validates: limits lowered, never raised

    def _on_start(self, _: Any) -> None:
        try:
            live = self.campaigns.start(self.campaign_spec())
        except SpecError as e:
            return self._error(f"**Cannot start the campaign** — {md_code(e.field)}: {md_text(e.message)}")
        except (RunBusyError, ValueError, OSError) as e:
            return self._error(f"**Cannot start the campaign** — {md_text(e)}")
        self.message.visible = False
        self._attach(live)

    def _error(self, text: str) -> None:
        self.message.object, self.message.visible = text, True

    # --- following the shared campaign ---------------------------------------------------------

    def _attach(self, live: LiveCampaign) -> None:
        self._live, self._following_live, self._drawn_version = live, True, -1
        self._was_active = live.active

    def _poll(self) -> None:
        doc = pn.state.curdoc  # one document patch per poll, as the Live tab does
        with pn.io.hold(), doc.models.freeze() if doc is not None else contextlib.nullcontext():
            self.update()

    def update(self) -> None:
        """What a poll does: follow a campaign another session started, buttons, status, plots if new fits."""
        current = self.campaigns.current
        if current is not None and current is not self._live:
            self._attach(current)
        busy = self.campaigns.busy
        self.start_button.disabled = busy or self.campaigns.runs.busy
        self.stop_button.disabled = not (busy and current is not None and current.status in ("starting", "running"))
        self._polls += 1
        live = self._live
        if live is not None and self._was_active and not live.active:
            self._was_active = False
            self._polls = 0  # finished: list it now
        if self._polls % REFRESH_POLLS == 0:
            self.refresh_list()
        if live is None or not self._following_live:
            return
        self._show_status(live)
        if live.summary_version != self._drawn_version and self.is_shown():
            with live.lock:
                ds, version = live.summary, live.summary_version
            if ds is not None:
                self._drawn_version = version
                self._show(ds, live.folder)

    def refresh(self) -> None:
        """Bring the tab up to date now (the dashboard calls this when the tab is opened)."""
        self.refresh_list()
        self.update()

    def _show_status(self, live: LiveCampaign) -> None:
        self.progress.max = max(live.total, 1)
        self.progress.value = min(live.done + live.failed, live.total)
        text = f"**{live.status}** — {live.progress_text()}\n\nFolder: {md_code(live.folder)}"
        if live.failures:
            text += "\n\nFailed fits:\n\n" + md_block("\n".join(live.failures))
        if live.error:
            text += f"\n\n{md_block(live.error)}"
        self.status.object = text

    # --- past campaigns ------------------------------------------------------------------------

    def refresh_list(self) -> None:
        """Offer every campaign folder of the runs directory (newest first), keeping the current pick."""
        options = {_NONE: ""} | {info.label: str(info.folder) for info in list_campaigns(self.campaigns.runs.runs_dir)}
        if options != self.picker.options:
            self._syncing = True
            try:
                value = self.picker.value if self.picker.value in options.values() else ""
                self.picker.options = options
                self.picker.value = value
                # The browser would otherwise show the first campaign as picked while nothing is loaded.
                self.picker.param.trigger("value")
            finally:
                self._syncing = False

    def _on_pick(self, event: Any) -> None:
        if self._syncing or not event.new:
            return
        self.reopen(Path(event.new))

    def reopen(self, folder: Path) -> None:
        """Show the campaign in ``folder``: the live one if it is still running, else from its files."""
        live = self.campaigns.current
        if live is not None and live.active and live.folder.resolve() == folder.resolve():
            self._attach(live)
            self.update()
            return
        try:
            ds, rebuilt = open_campaign(folder)
        except (NotACampaignError, OSError, ValueError) as e:
            return self._error(f"**Cannot open the campaign {md_text(folder.name)}**: {md_text(e)}")
        self.message.visible = False
        self._following_live = False
        fits = plotted_fits(ds)
        source = "rebuilt from its fit files" if rebuilt else "from its summary.nc"
        self.status.object = (
            f"**reopened** — {md_text(folder.name)}, {source}: {sum(fits.values())} completed "
            f"fits of {ds.sizes['replica'] * ds.sizes['method']}\n\nFolder: {md_code(folder)}"
        )
        self.progress.max, self.progress.value = max(ds.sizes["replica"] * ds.sizes["method"], 1), sum(fits.values())
        self._show(ds, folder)

    # --- drawing -------------------------------------------------------------------------------

    def _show(self, ds: xr.Dataset, folder: Path) -> None:
        self._ds, self._folder = ds, folder
        shape = (
            tuple(ds["method"].values),
            tuple(ds["param"].values),
            tuple(ds["qcf"].values),
            ds.sizes["x"],
            ds["qcf_xi_1sigma"].ndim,
        )
        if shape != self._shape or self._pipe is None:
            self._shape, self._pipe = shape, hv.streams.Pipe(data=ds)
            self._build_plots(ds)
        else:
            self._pipe.send(ds)
        fits = plotted_fits(ds)
        a = ds.attrs
        self.heading.object = (
            f"### Campaign {md_text(a.get('name', folder.name), 80)} · "
            f"{md_text(a.get('problem', '?'), 40)} · truths {md_text(a.get('truths', '?'), 20)}"
        )
        self.plotted.object = (
            f"Plotted: **{sum(fits.values())} fits** ("
            + ", ".join(f"{md_text(m, 20)} {n}" for m, n in fits.items())
            + f") of {ds.sizes['replica']} replicas"
        )
        self.criteria.object = "\n".join(
            f"- {md_text(m, 20)}: {md_text(ds.attrs.get(f'criterion_{m}', ''), 300)}" for m in fits
        )
        # Tables are sent only when they changed: a browser re-rendering a table drops a click on its rows.
        verdicts, fits_rows = verdict_table(ds), fits_table(ds)
        if not verdicts.equals(self.verdicts.value):
            self.verdicts.value = verdicts
        if not fits_rows.equals(self.fits.value):
            self._syncing = True
            try:
                self.fits.value = fits_rows
                self.fits.selection = []
            finally:
                self._syncing = False
        for button in self.downloads:
            button.filename = campaign_download_name(folder.name, button.label)
        self.downloads.visible = True

    def _build_plots(self, ds: xr.Dataset) -> None:
        assert self._pipe is not None
        plots = campaign_plots(self._pipe, ds)

        def grid(items: list[hv.DynamicMap], ncols: int) -> pn.GridBox:
            return pn.GridBox(
                *(pn.pane.HoloViews(p, sizing_mode="stretch_width") for p in items),
                ncols=ncols,
                sizing_mode="stretch_width",
            )

        two_d = ds["qcf_xi_1sigma"].ndim == 4
        self.plot_area[:] = [
            pn.pane.Markdown(
                "### Pulls (dashed: a calibrated method's, scaled to its fits: N(0, 1), or Student's t for errors "
                "from few bootstrap members)"
            ),
            grid(plots["pulls"], 3),
            pn.pane.Markdown(
                "### Coverage: observed vs nominal level (dash-dot: a calibrated method's; grey: its 95% range "
                "for this number of fits, binomial)"
            ),
            grid(plots["coverage"], 2),
            pn.pane.Markdown("### R_bv per parameter with 95% bootstrap intervals (green: the criterion [0.8, 1.25])"),
            grid(plots["r_bv"], 1),
            pn.pane.Markdown(
                "### ξ_1σ(x) per QCF (dashed: 0.683; dotted: each method's expectation)"
                + (", averaged over y" if two_d else "")
            ),
            grid(plots["xi"], 3),
        ]

    def _download(self, label: str) -> pn.widgets.FileDownload:
        def make() -> io.BytesIO:
            if self._ds is None or self._folder is None:
                return io.BytesIO(b"")
            return io.BytesIO(campaign_download(self._ds, self._folder.name, label)[1])

        return pn.widgets.FileDownload(
            callback=make, filename="campaign", label=label, width=170, color="light", css_classes=["download"]
        )

    def _on_fit(self, event: Any) -> None:
        if self._syncing or not event.new or self._folder is None:
            return
        row = self.fits.value.iloc[event.new[-1]]
        path = fit_path(self._folder, str(row["method"]), int(row["replica"]))
        if path is None:
            return self._error(
                f"Fit {md_text(row['method'], 20)} replica {int(row['replica'])} has no results "
                f"file ({md_text(row['status'], 20)})"
            )
        self.message.visible = False
        self.open_fit(path)

    def __panel__(self) -> pn.viewable.Viewable:
        form = pn.Row(
            self.replicas,
            pn.Column(pn.pane.Markdown("Truths", margin=(0, 5)), self.truths),
            pn.Column(pn.pane.Markdown("Methods", margin=(0, 5)), self.methods),
            self.start_button,
            self.stop_button,
            css_classes=["campaign-form"],
        )
        note = pn.pane.Markdown(
            "A campaign fits many pseudo-data replicas of **the spec in the editor** (its own `campaign` section "
            "fills this form; prior truths are drawn within its `campaign.prior_bounds`, or the problem's bounds). "
            "Campaigns are kept under the runs directory's `campaigns/<name>/`; starting one whose folder holds "
            "finished fits of the same spec resumes it.",
            sizing_mode="stretch_width",
        )
        return pn.Column(
            pn.pane.Markdown("## Closure campaign"),
            note,
            form,
            self.message,
            self.progress,
            self.status,
            self.picker,
            self.heading,
            self.plotted,
            self.downloads,
            pn.pane.Markdown("### Verdicts"),
            self.criteria,
            self.verdicts,
            self.plot_area,
            pn.pane.Markdown("### Fits (select one to open it in the Runs tab)"),
            self.fits,
            sizing_mode="stretch_width",
        )

    def dispose(self) -> None:
        if self._callback is not None:
            self._callback.stop()
