"""The dashboard's Cluster tab: the Dask workers, their load, which run, member and rank each one holds, and a
link to Dask's own dashboard when the scheduler serves one."""

from __future__ import annotations

import functools
import html
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import panel as pn

from qcf_studio.app.cluster import worker_rows
from qcf_studio.app.dashboard.markup import md_text
from qcf_studio.app.dashboard.runs import RunManager

__all__ = ["ClusterView", "dask_dashboard_link"]

POLL_MS = 2000  # the client refreshes the scheduler's worker metrics every couple of seconds anyway

_TITLES = {
    "worker": "worker",
    "host": "host",
    "threads": "threads",
    "cpu_percent": "CPU %",
    "memory_mb": "memory MB",
    "memory_limit_mb": "limit MB",
    "resources": "resources",
    "tasks": "run · member · rank",
}


@functools.lru_cache(maxsize=8)
def _not_served(link: str) -> bool:
    """Whether the server at ``link`` says there is nothing there (HTTP 404); asked once per server process."""
    try:
        with urllib.request.urlopen(link, timeout=2.0):  # noqa: S310 (an http(s) address, checked by the caller)
            return False
    except urllib.error.HTTPError as e:
        return e.code == 404
    except (OSError, ValueError):  # unreachable from here: the user's browser may still reach it
        return False


def dask_dashboard_link(client: Any) -> str | None:
    """The address of Dask's own dashboard for ``client``'s scheduler, or ``None`` when it serves none.

    ``Client.dashboard_link`` alone does not tell: a scheduler started without the dashboard (the embedded
    LocalCluster, ``dashboard_address=None`` in :mod:`qcf_studio.engine.run.cluster`) still runs its HTTP server (its
    health
    route only) under the service name "dashboard", and the link's ``/status`` answers 404. A scheduler given
    with ``--scheduler`` usually serves one. Only an http(s) address is offered.
    """
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, TypeError, ValueError):  # no HTTP server among the scheduler's services
        return None
    if not isinstance(link, str) or urlsplit(link).scheme not in ("http", "https") or not urlsplit(link).netloc:
        return None
    return None if _not_served(link) else link


class ClusterView(pn.viewable.Viewer):
    """A table of the cluster's workers, refreshed while ``is_shown()`` (the tab is open)."""

    def __init__(self, manager: RunManager, is_shown: Callable[[], bool] = lambda: True, **params: Any) -> None:
        super().__init__(**params)
        self.manager = manager
        self.is_shown = is_shown
        self.summary = pn.pane.Markdown(sizing_mode="stretch_width", css_classes=["cluster-summary"])
        self.dask_link = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["dask-dashboard"])
        self._link_shown = False
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(_TITLES)),
            css_classes=["workers-table"],
            disabled=True,
            show_index=False,
            titles=_TITLES,
            hidden_columns=["address"],
            sizing_mode="stretch_width",
            height=300,
            formatters={
                "cpu_percent": {"type": "progress", "max": 100, "legend": True},
                "memory_mb": {"type": "money", "precision": 0},
                "memory_limit_mb": {"type": "money", "precision": 0},
            },
        )
        self.refresh()
        self._callback = pn.state.add_periodic_callback(self._poll, period=POLL_MS)

    def _poll(self) -> None:
        if self.is_shown():
            self.refresh()

    def refresh(self) -> None:
        try:
            rows = worker_rows(self.manager.client, self.manager.run_names())
        except Exception as e:  # noqa: BLE001 (a scheduler that went away must not break the page)
            self.summary.object = f"**Cluster unreachable:** {md_text(f'{type(e).__name__}: {e}', 300)}"
            return
        df = pd.DataFrame(rows, columns=list(_TITLES) + ["address"])
        busy = int((df["tasks"] != "idle").sum()) if len(df) else 0
        address = self.manager.client.scheduler.address
        self.summary.object = (
            f"**Scheduler** `{address}` · {len(df)} workers, {int(df['threads'].sum()) if len(df) else 0} threads, "
            f"{busy} busy · memory {df['memory_mb'].sum() / 1024:.1f} GiB in use"
        )
        self.table.value = df
        if not self._link_shown:  # the scheduler's services do not change: asked once it answers
            self._show_link(dask_dashboard_link(self.manager.client))
            self._link_shown = True

    def _show_link(self, link: str | None) -> None:
        if link is None:
            text = (
                "Dask's own dashboard: the scheduler serves none (the embedded cluster runs without it; "
                "a scheduler given with <code>--scheduler</code> usually has one)"
            )
        else:  # the address comes from the scheduler: escaped, and opened in its own tab
            href = html.escape(link, quote=True)
            text = (
                f"Dask's own dashboard (task stream, profiles, worker memory): "
                f'<a href="{href}" target="_blank" rel="noopener noreferrer">{href}</a>'
            )
        self.dask_link.object = text

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Cluster: every worker, its load and what it runs"),
            self.summary,
            self.dask_link,
            self.table,
            sizing_mode="stretch_width",
        )

    def dispose(self) -> None:
        self._callback.stop()
