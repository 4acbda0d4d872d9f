"""Running ensembles on Dask: one task per member, metrics streamed back, stop via a Dask Event.

The only engine module that imports Dask. Members are independent tasks with distinct seeds;
each worker reports through :class:`DaskEventSink` (``Worker.log_event``) on the run's topic,
which the client follows with ``Client.subscribe_topic``.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from distributed import Client, Event, Future, get_worker, wait

from engine.pseudodata import MeasuredData
from engine.runner import failed_member, reference_fit, train_member
from engine.sinks import HistorySink, MetricsSink
from engine.spec import Spec, parse_spec_text
from engine.training import MemberResult

__all__ = ["DaskEventSink", "RunHandle", "start_run", "replay", "topic_for"]


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


def replay(msg: dict[str, Any], sink: MetricsSink) -> None:
    """Turn one message of the event stream back into the call a worker's sink received."""
    if msg["type"] == "metrics":
        sink.log_metrics(msg["member"], msg["step"], msg["metrics"])
    elif msg["type"] == "snapshot":
        sink.log_snapshot(msg["member"], msg["step"], msg["snapshot"])


def run_member_task(spec_yaml: str, member: int, data: MeasuredData, run_id: str) -> dict[str, Any]:
    """Dask task: train one member on this worker with as many torch threads as it has threads."""
    worker = get_worker()
    torch.set_num_threads(max(1, worker.state.nthreads))
    spec = parse_spec_text(spec_yaml)
    stop = Event(f"stop-{run_id}")
    sink = DaskEventSink(topic_for(run_id))
    sink.worker.log_event(topic_for(run_id), {"type": "started", "member": member, "worker": worker.address})
    result = train_member(spec, member, data, sink, stop_requested=stop.is_set)
    return asdict(result)


def run_reference_task(spec_yaml: str, data: MeasuredData) -> dict[str, Any]:
    """Dask task: the maximum-likelihood reference fit of a GAN run's data (not streamed)."""
    torch.set_num_threads(max(1, get_worker().state.nthreads))
    return asdict(reference_fit(parse_spec_text(spec_yaml), data))


@dataclass
class RunHandle:
    """A run in flight on a Dask cluster; members report to the ``sink`` given to :func:`start_run`."""

    client: Client
    spec: Spec
    run_id: str
    futures: list[Future]
    started: float = field(default_factory=time.perf_counter)
    history: HistorySink = field(default_factory=HistorySink)  # kept for members that die
    workers: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reference_future: Future | None = None

    def stop(self) -> None:
        """Ask every member to stop at its next check; they return what they have so far."""
        Event(f"stop-{self.run_id}", client=self.client).set()
        if self.reference_future is not None:
            self.reference_future.cancel()

    def record(self, msg: dict[str, Any]) -> None:
        with self.lock:
            replay(msg, self.history)
            if msg["type"] == "started":
                self.workers[msg["member"]] = msg["worker"]

    def results(self, timeout: float | None = None) -> list[MemberResult]:
        """Wait for every member; a member whose task failed is kept as ``failed`` with its metrics."""
        wait(self.futures, timeout=timeout)
        out = []
        for member, fut in enumerate(self.futures):
            if fut.status == "finished":
                out.append(MemberResult(**fut.result()))
            else:
                exc = fut.exception()
                with self.lock:
                    metrics = self.history.of(member)
                out.append(failed_member(self.spec, member, metrics, f"member {member}: {exc!r}"))
        self.client.unsubscribe_topic(topic_for(self.run_id))
        return out

    def reference(self, timeout: float | None = None) -> MemberResult | None:
        """The maximum-likelihood reference fit, if the spec asked for one and it succeeded."""
        if self.reference_future is None:
            return None
        wait([self.reference_future], timeout=timeout)
        if self.reference_future.status != "finished":
            return None
        return MemberResult(**self.reference_future.result())

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started


def start_run(
    client: Client,
    spec: Spec,
    data: MeasuredData,
    sink: MetricsSink | None = None,
) -> RunHandle:
    """Submit every ensemble member of ``spec`` as its own task; their reports reach ``sink`` here."""
    run_id = uuid.uuid4().hex[:12]
    handle = RunHandle(client, spec, run_id, futures=[])

    def handler(event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        handle.record(msg)
        if sink is not None:
            replay(msg, sink)

    client.subscribe_topic(topic_for(run_id), handler)
    Event(f"stop-{run_id}", client=client).clear()
    data_future = client.scatter(data, broadcast=True, hash=False)
    spec_yaml = spec.to_yaml()
    handle.futures = [
        client.submit(run_member_task, spec_yaml, m, data_future, run_id, key=f"member-{m}-{run_id}", pure=False)
        for m in range(spec.ensemble.members)
    ]
    if spec.training.method == "gan" and spec.training.mle_reference:
        handle.reference_future = client.submit(run_reference_task, spec_yaml, data_future,
                                                key=f"mle-reference-{run_id}", pure=False, priority=-1)
    return handle
