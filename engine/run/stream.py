"""What a training task sends back over Dask while it runs: metrics and snapshots on the scheduler's event log
(one topic per run, replayed on the client into the same sink calls the worker made) and its latest checkpoint
in a Dask ``Variable``, which outlives the worker."""

from __future__ import annotations

from typing import Any

from distributed import Client, Variable, get_worker

from qcf_studio.engine.run.sinks import MetricsSink

__all__ = ["DaskEventSink", "RankEventSink", "DaskCheckpointStore", "replay", "topic_for"]


def topic_for(run_id: str) -> str:
    return f"qcf-studio-{run_id}"


class DaskEventSink:
    """Sends metrics and snapshots from a worker to the scheduler's event log on ``topic``."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.worker = get_worker()

    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        self.worker.log_event(self.topic, {"type": "metrics", "member": member, "step": step, "metrics": metrics})

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        self.worker.log_event(self.topic, {"type": "snapshot", "member": member, "step": step, "snapshot": snapshot})


class RankEventSink:
    """A data-parallel rank other than 0: its losses go to the topic as ``rank_metrics`` (no snapshots)."""

    def __init__(self, topic: str, rank: int) -> None:
        self.topic, self.rank = topic, rank
        self.worker = get_worker()

    def log_metrics(self, member: int, step: int, metrics: dict[str, float]) -> None:
        msg = {"type": "rank_metrics", "member": member, "rank": self.rank, "step": step, "metrics": metrics}
        self.worker.log_event(self.topic, msg)

    def log_snapshot(self, member: int, step: int, snapshot: dict[str, Any]) -> None:
        pass


class DaskCheckpointStore:
    """A member's latest checkpoint in a Dask ``Variable`` on the scheduler: it outlives the worker.

    The client creates it empty (:meth:`create`) before the task runs, so reading never waits.
    """

    def __init__(self, name: str, client: Client | None = None) -> None:
        self.variable = Variable(name, client=client)
        self.step = 0

    @classmethod
    def create(cls, name: str, client: Client) -> DaskCheckpointStore:
        store = cls(name, client)
        store.variable.set({"step": 0, "blob": b""})
        return store

    def load(self) -> bytes | None:
        value = self.variable.get(timeout=30)
        self.step = int(value["step"])
        return value["blob"] or None

    def save(self, blob: bytes, step: int) -> None:
        self.variable.set({"step": step, "blob": blob})


def replay(msg: dict[str, Any], sink: MetricsSink) -> None:
    """Turn one message of the event stream back into the call a worker's sink received."""
    if msg["type"] == "metrics":
        sink.log_metrics(msg["member"], msg["step"], msg["metrics"])
    elif msg["type"] == "snapshot":
        sink.log_snapshot(msg["member"], msg["step"], msg["snapshot"])
    elif msg["type"] == "rank_metrics" and hasattr(sink, "log_rank_metrics"):  # sinks that show every rank
        sink.log_rank_metrics(msg["member"], msg["rank"], msg["step"], msg["metrics"])
