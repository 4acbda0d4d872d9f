"""The dashboard's Cluster tab: the Dask workers, their load, and which run, member and rank each one holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn

from app.cluster import worker_rows
from app.markup import md_text
from app.runs import RunManager

__all__ = ["ClusterView"]

POLL_MS = 2000  # the client refreshes the scheduler's worker metrics every couple of seconds anyway

_TITLES = {"worker": "worker", "host": "host", "threads": "threads", "cpu_percent": "CPU %", "memory_mb": "memory MB",
           "memory_limit_mb": "limit MB", "resources": "resources", "tasks": "run · member · rank"}


class ClusterView(pn.viewable.Viewer):
    """A table of the cluster's workers, refreshed while ``is_shown()`` (the tab is open)."""

    def __init__(self, manager: RunManager, is_shown: Callable[[], bool] = lambda: True, **params: Any) -> None:
        super().__init__(**params)
        self.manager = manager
        self.is_shown = is_shown
        self.summary = pn.pane.Markdown(sizing_mode="stretch_width", css_classes=["cluster-summary"])
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(_TITLES)), name="workers-table", css_classes=["workers-table"], disabled=True,
            show_index=False,
            titles=_TITLES, hidden_columns=["address"], sizing_mode="stretch_width", height=300,
            formatters={"cpu_percent": {"type": "progress", "max": 100, "legend": True},
                        "memory_mb": {"type": "money", "precision": 0},
                        "memory_limit_mb": {"type": "money", "precision": 0}},
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

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Cluster: every worker, its load and what it runs"), self.summary, self.table,
            sizing_mode="stretch_width",
        )

    def dispose(self) -> None:
        self._callback.stop()
