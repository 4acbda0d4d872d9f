"""Where training reports to: one small interface, several destinations.

The training loop calls :meth:`MetricsSink.log_metrics` every few steps and
:meth:`MetricsSink.log_snapshot` less often. Implementations: :class:`HistorySink` (the metric
history written into results), the Dask event stream (``qcf_studio.engine.run.stream.DaskEventSink``, on
workers), and on the client the console progress bar and the dashboard's live run, which receive
the same calls replayed from the stream (``qcf_studio.engine.run.stream.replay``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from qcf_studio.engine.data.marginals import marginal_x

if TYPE_CHECKING:
    from torch import Tensor

    from qcf_studio.engine.problems import Problem

__all__ = ["MetricsSink", "MultiSink", "HistorySink", "Predictor", "live_snapshot"]


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


class Predictor(Protocol):
    """What :func:`live_snapshot` reads: a :class:`GANTrainer` or an :class:`~qcf_studio.engine.mle.MLEFit`."""

    @property
    def problem(self) -> Problem: ...

    @property
    def qcf_grids(self) -> tuple[Tensor, ...]: ...

    @property
    def edges(self) -> np.ndarray: ...

    def predict(self, n_params: int | None = None, events_per_param: int = 50) -> dict[str, np.ndarray]: ...


def live_snapshot(fit: Predictor) -> dict[str, Any]:
    """A compact, JSON-friendly view of the current state of ``fit`` for live plots (x-projections in 2D)."""
    p = fit.predict(n_params=400 if fit.problem.event_dims == 1 else 100, events_per_param=25)
    snap = {
        "x": fit.qcf_grids[0].tolist(),
        "params_mean": p["params_mean"].tolist(),
        "params_std": p["params_std"].tolist(),
        "chi2_ndf": p["chi2_ndf"].tolist(),
        "hist_gen": marginal_x(p["hist_gen"], fit.edges).tolist(),
    }
    prefix = "qcf" if fit.problem.event_dims == 1 else "qcfx"
    snap.update({f"qcf_{k}": p[f"{prefix}_{k}"].tolist() for k in ("mean", "lo", "hi")})
    if fit.problem.event_dims == 2:
        snap["y"] = fit.qcf_grids[1].tolist()
        snap["qcf2d_mean"] = p["qcf_mean"].tolist()
        snap["qcf2d_std"] = p["qcf_std"].tolist()  # the generator's spread, for the projections' bands
    return snap
