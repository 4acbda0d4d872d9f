"""Where training reports to: one small interface, several destinations.

The training loop calls :meth:`MetricsSink.log_metrics` every few steps and
:meth:`MetricsSink.log_snapshot` less often. Implementations: :class:`HistorySink` (the metric
history written into results), the Dask event stream (``engine.run.distributed.DaskEventSink``, on
workers), and on the client the console progress bar and the dashboard's live run, which receive
the same calls replayed from the stream (``engine.run.distributed.replay``).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["MetricsSink", "MultiSink", "HistorySink"]


class MetricsSink(Protocol):
    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        """Scalars of one step (losses, accuracies, parameter means)."""

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        """Heavier state: QCF bands, parameter spread, generated histograms (lists of floats)."""


class MultiSink:
    """Forwards every call to each of ``sinks``."""

    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks = sinks

    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        for s in self.sinks:
            s.log_metrics(member, step, metrics)

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        for s in self.sinks:
            s.log_snapshot(member, step, snapshot)


class HistorySink:
    """Keeps every member's metrics as columns: ``{member: {"step": [...], name: [...]}}``."""

    def __init__(self) -> None:
        self.columns: dict[int, dict[str, list[float]]] = {}

    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        cols = self.columns.setdefault(member, {"step": []})
        cols["step"].append(step)
        for k, v in metrics.items():
            cols.setdefault(k, []).append(float(v))

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        pass

    def of(self, member: int) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.columns.get(member, {"step": []}).items()}
