"""Where training reports to: one small interface, several destinations.

The training loop calls :meth:`MetricsSink.log_metrics` every few steps and
:meth:`MetricsSink.log_snapshot` less often; the Dask event stream implements it on workers, and the
client turns what it streams into the console progress bar and the live plots.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["MetricsSink"]


class MetricsSink(Protocol):
    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        """Scalars of one step (losses, accuracies, parameter means)."""

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        """Heavier state: QCF bands, parameter spread, generated histograms (lists of floats)."""
