"""The dashboard: the spec (form and YAML), Start/Stop, progress, the live plots of the current run, the runs,
their comparison, the cluster, and closure campaigns; :meth:`Dashboard.header`, :meth:`~Dashboard.sidebar` and
:meth:`~Dashboard.main` fill the page template's areas (:func:`qcf_studio.layouts.page.page_template`)."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import holoviews as hv
import panel as pn
import yaml

from qcf_studio.app.cluster import cluster_headline
from qcf_studio.app.dashboard.campaign_view import CampaignView
from qcf_studio.app.dashboard.campaigns import CampaignManager, shared_campaigns
from qcf_studio.app.dashboard.cluster_view import ClusterView
from qcf_studio.app.dashboard.live_view import POLL_MS, LiveView, status_text
from qcf_studio.app.dashboard.markup import md_code, md_text
from qcf_studio.app.dashboard.runs import LiveRun, RunBusyError, RunManager
from qcf_studio.app.dashboard.spec_form import SpecForm
from qcf_studio.app.dashboard.upload import (
    MAX_UPLOAD_BYTES,
    UploadError,
    file_label,
    read_measured_upload,
    save_upload,
    upload_layout,
    upload_summary,
)
from qcf_studio.app.dashboard.views import CompareView, RunsBrowser
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.safe_yaml import YAMLRefused, load_yaml
from qcf_studio.engine.spec import LimitsSpec, Spec, SpecError, default_spec, parse_spec_text

__all__ = ["Dashboard"]

HEADLINE_S = 5.0  # how often the header's line about the cluster is asked for (workers come and go)
MAX_SPEC_BYTES = 1_000_000  # a spec file loaded in the browser
RUNS_TAB, CLUSTER_TAB, CAMPAIGN_TAB = 1, 3, 4  # positions in the page's tabs


def _spec_summary(spec: Spec) -> str:
    truth = ", ".join(f"{k} = {v:g}" for k, v in spec.problem.truth.items())
    t = spec.training
    return (
        f"| | |\n|---|---|\n| **problem** | `{spec.problem.kind}` — {get_problem(spec.problem.kind).description} |\n"
        f"| **truth** | {truth} |\n| **events** | {spec.problem.events:,} per observable (seed {spec.problem.seed}) |\n"
        f"| **detector resolution** | {spec.detector.resolution:g} |\n"
        f"| **training** | {t.method}, {t.steps:,} steps |\n| **ensemble members** | {spec.ensemble.members} |\n"
    )


class Dashboard(pn.viewable.Viewer):
    """One browser session's view of the shared :class:`RunManager` (and its :class:`CampaignManager`)."""

    def __init__(
        self, manager: RunManager, spec_text: str, campaigns: CampaignManager | None = None, **params: Any
    ) -> None:
        super().__init__(**params)
        self.manager = manager
        self.campaigns = campaigns or shared_campaigns(manager)
        self.campaign_view = CampaignView(
            self.campaigns,
            get_spec=lambda: self._validate(self.editor.value_input or self.editor.value),
            open_fit=self._open_fit,
            is_shown=lambda: self.tabs.active == CAMPAIGN_TAB,
        )
        self.editor = pn.widgets.TextAreaInput(
            label="Spec (YAML)",
            value=spec_text,
            height=330,
            sizing_mode="stretch_width",
            stylesheets=[":host textarea { font-family: monospace; font-size: 12px; }"],
        )
        self.form = SpecForm(on_edit=self._on_form_edit)
        self.spec_file = pn.widgets.FileInput(accept=".yaml,.yml", label="Load spec", multiple=False)
        self.spec_file.param.watch(self._on_spec_file, "value")
        self.data_file = pn.widgets.FileInput(
            accept=".nc,.csv,.parquet,.root", label="Upload measured data", multiple=False
        )
        self.data_file.param.watch(self._on_data_file, "value")
        self.data_note = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["upload-note"])
        self.save_spec = pn.widgets.FileDownload(
            callback=self._spec_download,
            filename="spec.yaml",
            label="Save spec (YAML)",
            color="default",
            width=200,
        )
        self.summary = pn.pane.Markdown(sizing_mode="stretch_width", css_classes=["spec-summary"])
        self.message = pn.pane.Alert(
            "", alert_type="danger", visible=False, sizing_mode="stretch_width", css_classes=["spec-error"]
        )
        self.start_button = pn.widgets.Button(label="Start", color="primary", width=110)
        self.stop_button = pn.widgets.Button(label="Stop", color="danger", width=110, disabled=True)
        self.progress = pn.indicators.Progress(value=0, max=1, sizing_mode="stretch_width", bar_color="primary")
        self.status = pn.pane.Markdown("Ready.", css_classes=["run-status"], sizing_mode="stretch_width")
        self.start_button.on_click(self._on_start)
        self.stop_button.on_click(lambda _: self.manager.stop())
        self.editor.param.watch(self._on_edit, "value_input")
        self.live = LiveView()  # the Live tab
        self.headline = pn.pane.Markdown(cluster_headline(manager.client), css_classes=["cluster-headline"])
        self._headline_at = time.monotonic()
        self._run: LiveRun | None = None
        self.spec = self._validate(spec_text)
        if self.spec is not None:
            self.live.build(self.spec)
        if manager.current is not None:  # a new session joins the run in progress
            self._attach(manager.current)
        self._callback = pn.state.add_periodic_callback(self._poll, period=POLL_MS)
        self.runs = RunsBrowser(manager.runs_dir)
        self.compare = CompareView(manager.runs_dir)
        self.cluster = ClusterView(manager, is_shown=lambda: self.tabs.active == CLUSTER_TAB)
        self.tabs = pn.Tabs(
            ("Live", self.live),
            ("Runs", self.runs),
            ("Compare", self.compare),
            ("Cluster", self.cluster),
            ("Campaign", self.campaign_view),
            sizing_mode="stretch_width",
            dynamic=False,
        )
        self.tabs.param.watch(self._on_tab, "active")

    def _on_tab(self, event: Any) -> None:
        if event.new == CLUSTER_TAB:
            self.cluster.refresh()
        elif event.new == CAMPAIGN_TAB:
            self.campaign_view.refresh()

    def _open_fit(self, path: Path) -> None:
        """A campaign's fit, shown in the Runs tab (its file lives in the campaign's folder, not in the list)."""
        self.runs.open(path)
        self.tabs.active = RUNS_TAB

    # --- spec ------------------------------------------------------------------------------------

    def _validate(self, text: str) -> Spec | None:
        try:
            # Specs typed here may lower the limits, not raise them (that is for the command line).
            spec = parse_spec_text(text, base_dir=self.manager.data_dir, max_limits=LimitsSpec())
            self.manager.check_readable(spec)
        except SpecError as e:
            self.message.object = f"**Invalid spec** — {md_code(e.field)}: {md_text(e.message)}"
            self.message.visible = True
            self.summary.object = ""
            self.form.show_error(e.field, e.message)
            return None
        self.message.visible = False
        self.summary.object = _spec_summary(spec)
        self.form.show(spec.to_dict())
        self.form.show_error(None)
        self.save_spec.filename = f"{spec.name}.yaml"
        self.campaign_view.prefill(spec)
        return spec

    def _set_text(self, text: str) -> None:
        """Put ``text`` in the editor; its watcher (:meth:`_on_edit`) validates it once it changed."""
        self.editor.value = text
        self.editor.value_input = text

    def _on_edit(self, event: Any) -> None:
        self.spec = self._validate(event.new)

    def _on_form_edit(self, section: str, key: str, value: Any) -> None:
        """A form field changed: write it into the YAML (the one source of the spec) and validate."""
        if (section, key) == ("problem", "kind"):
            if self.spec is None or self.spec.problem.kind != value:  # another problem: its standard spec
                self._set_text(default_spec(value).to_yaml())
            return
        self._edit({(section, key): value})

    def _edit(self, changes: dict[tuple[str, str], Any]) -> None:
        """Write ``{(section, key): value}`` into the YAML at once and validate."""
        try:
            raw = load_yaml(self.editor.value_input or self.editor.value)
        except YAMLRefused:
            raw = None
        if not isinstance(raw, dict):  # the YAML is broken: edit the last valid spec instead
            raw = self.spec.to_dict() if self.spec is not None else default_spec().to_dict()
        for (section, key), value in changes.items():
            if section:
                if not isinstance(raw.get(section), dict):
                    raw[section] = {}
                raw[section][key] = value
            else:
                raw[key] = value
        self._set_text(yaml.safe_dump(raw, sort_keys=False))

    def _on_spec_file(self, event: Any) -> None:
        name = md_text(file_label(self.spec_file.filename or "the file"))
        data = event.new
        if not data:
            return
        if len(data) > MAX_SPEC_BYTES:
            self._file_error(f"{name}: {len(data):,} bytes; a spec is at most {MAX_SPEC_BYTES:,}")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._file_error(f"{name}: not a text (UTF-8) file")
            return
        self._set_text(text)
        if self.spec is None:
            self.message.object = f"**{name}** — {self.message.object}"

    def _on_data_file(self, event: Any) -> None:
        """Measured events uploaded (NetCDF, CSV, Parquet or ROOT): checked, saved as NetCDF under the runs
        directory's ``uploads/``, and named in ``problem.data``; a bad file is explained and changes nothing. A
        Parquet or ROOT file is read with the spec's ``problem.columns`` and ``problem.xsec`` (the form's fields),
        which the saved NetCDF file no longer needs: they are cleared with it."""
        if not event.new:
            return
        name = self.data_file.filename or "upload"
        try:
            layout = upload_layout(self.spec, self.editor.value_input or self.editor.value)
            kind = layout.pop("kind")
            data = read_measured_upload(name, event.new, kind, **layout)
            path = save_upload(data, self.manager.runs_dir / "uploads", name)
        except (UploadError, SpecError) as e:
            self.data_note.object = ""
            self.message.object = f"**Upload refused** — {md_text(e)}"
            self.message.visible = True
            return
        self._edit({("problem", "data"): str(path.resolve()), ("problem", "columns"): None, ("problem", "xsec"): None})
        self.data_note.object = f"Uploaded {md_code(file_label(name))} → {md_code(path)}: {upload_summary(data)}"

    def _file_error(self, text: str) -> None:
        self.message.object = f"**Cannot load the spec** — {text}"
        self.message.visible = True

    def _spec_download(self) -> io.BytesIO:
        return io.BytesIO((self.editor.value_input or self.editor.value).encode())

    # --- run control --------------------------------------------------------------------------

    def _on_start(self, _: Any) -> None:
        spec = self._validate(self.editor.value_input or self.editor.value)
        if spec is None:
            return  # the red message says why; nothing is started
        self.spec = spec
        try:
            run = self.manager.start(spec)
        except RunBusyError as e:
            self.message.object = str(e)
            self.message.visible = True
            return
        self._attach(run)

    def _attach(self, run: LiveRun) -> None:
        self._run = run
        self.live.attach(run)

    def _poll(self) -> None:
        # One document patch per poll instead of one per changed model (less for the browser to apply), and
        # one recomputation of the document's model graph instead of one per updated plot (without the freeze
        # that walk took a large share of the server's time).
        doc = pn.state.curdoc
        with pn.io.hold(), doc.models.freeze() if doc is not None else contextlib.nullcontext():
            self._update()

    def _update(self) -> None:
        if self.manager.current is not None and self.manager.current is not self._run:
            self._attach(self.manager.current)  # another session started a run
        run = self._run
        busy = self.manager.busy
        self.start_button.disabled = busy or self.campaigns.busy
        self.stop_button.disabled = not (busy and run is not None and run.status in ("starting", "running"))
        if time.monotonic() - self._headline_at >= HEADLINE_S:
            self._headline_at = time.monotonic()
            self.headline.object = cluster_headline(self.manager.client)
        if run is None:
            return
        self.live.update()
        self.progress.max = max(run.total_steps, 1)
        self.progress.value = min(run.done_steps, run.total_steps)
        self.status.object = status_text(run)

    def header(self) -> list[pn.viewable.Viewable]:
        """What the page's header shows beside the product's name: the cluster's address and size."""
        return [self.headline]

    def sidebar(self) -> pn.Column:
        """The spec (form, YAML, measured data), its errors, Start/Stop, progress and status, the spec's summary."""
        spec_tabs = pn.Tabs(
            ("Form", pn.Column(self.form, scroll=True, sizing_mode="stretch_both")),
            ("YAML", pn.Column(self.editor, pn.Row(self.spec_file), self.save_spec, sizing_mode="stretch_width")),
            (
                "Data",
                pn.Column(
                    pn.pane.Markdown(
                        "Measured events instead of pseudo-data: NetCDF (as `qcf-studio data` writes), "
                        "CSV or Parquet with columns `observable`, `x` (and `y` in 2D), optional `weight`, or "
                        "ROOT with a TTree per observable (other trees, branches or columns: the form's "
                        f"*columns* and *xsec*); up to {MAX_UPLOAD_BYTES // 2**20} MiB. See the README."
                    ),
                    self.data_file,
                    self.data_note,
                    sizing_mode="stretch_width",
                ),
            ),
            sizing_mode="stretch_width",
            height=560,
            dynamic=False,
        )
        return pn.Column(
            spec_tabs,
            self.message,
            pn.Row(self.start_button, self.stop_button),
            self.progress,
            self.status,
            self.summary,
            sizing_mode="stretch_width",
            css_classes=["spec-sidebar"],
        )

    def main(self) -> pn.Tabs:
        """The tabs: Live, Runs, Compare, Cluster, Campaign."""
        return self.tabs

    def __panel__(self) -> pn.viewable.Viewable:
        """The dashboard without the page around it (in a notebook): the sidebar's column, then the tabs."""
        return pn.Row(pn.Column(self.sidebar(), width=430), self.tabs, sizing_mode="stretch_width")

    def dispose(self) -> None:
        self._callback.stop()
        for view in (self.cluster, self.runs, self.compare, self.campaign_view):
            view.dispose()


hv.extension("bokeh", logo=False)
