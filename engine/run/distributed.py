"""Running members on Dask: tasks, metrics streamed back, stop via a Dask Event, checkpoints, ranks.

With :mod:`qcf_studio.engine.run.cluster` (the embedded cluster), the engine module that imports Dask. Two modes
(``cluster.mode``):

- ``ensemble``: each member is one task with its own seed, placed on its own worker when there
  are enough. It saves a checkpoint every ``cluster.checkpoint_every`` steps into a Dask
  ``Variable`` on the scheduler; if its worker dies, Dask runs the task again elsewhere and it
  resumes from there (its metric history up to the checkpoint kept).
- ``data_parallel``: each member is ``ranks`` tasks on distinct workers that train one generator
  together (``qcf_studio.engine.run.parallel``). Rank 0 opens a ``TCPStore`` on its worker's host and publishes
  its address in a Dask ``Variable``; the other ranks read it from there (the rendezvous). Rank 0
  streams the member's metrics and returns its result. A rank that fails or disappears aborts the
  group; its peers raise at once or after ``cluster.timeout`` seconds, never hang.

Each worker reports through :class:`DaskEventSink` (``Worker.log_event``) on the run's topic,
which the client follows with ``Client.subscribe_topic``.

What a task receives: the validated :class:`~qcf_studio.engine.spec.Spec` object (pickled with the task, ~1.5 kB)
and the :class:`~qcf_studio.engine.data.pseudodata.MeasuredData` the client read from ``problem.data`` or generated from
the truth, scattered once per run to every worker. No worker parses a spec or opens ``problem.data``:
a remote worker that cannot see the client's files trains on the same data all the same.

Devices (``cluster.device``): each task resolves the device on its worker
(:func:`qcf_studio.engine.run.devices.resolve_device`: ``auto`` is CUDA where the worker has it). With ``cuda``
the tasks ask for the worker resource ``GPU`` (one unit each), so they run only on workers started
with ``--resources GPU=1``, one per GPU; a cluster without such workers is refused before anything
is submitted. Data-parallel ranks on CUDA share gradients with NCCL (gloo on the CPU).
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torch.distributed as dist
from distributed import Client, Event, Future, Variable, get_worker, wait

from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.gan.accelerator import tune_process
from qcf_studio.engine.gan.trainer import MemberResult
from qcf_studio.engine.run.devices import resolve_device
from qcf_studio.engine.run.parallel import GradientSharing, ShareSchedule, host_store
from qcf_studio.engine.run.runner import failed_member, reference_fit, train_member, train_rank
from qcf_studio.engine.run.sinks import HistorySink, MetricsSink
from qcf_studio.engine.run.stream import DaskCheckpointStore, DaskEventSink, RankEventSink, replay, topic_for
from qcf_studio.engine.run.task_keys import member_key, new_run_id, reference_key
from qcf_studio.engine.spec import Spec

__all__ = ["RunHandle", "start_run"]


def _checkpoint_name(run_id: str, member: int) -> str:
    return f"qcf-checkpoint-{run_id}-{member}"


def _worker_device(spec: Spec) -> torch.device:
    """The spec's ``cluster.device`` resolved on this worker (its GPU made the current one)."""
    worker = get_worker()
    device = resolve_device(spec.cluster.device, worker.address, worker.name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _task_setup() -> None:
    """What every training task does first on its worker: torch gets as many threads as the worker has,
    and the process keeps freed memory (:func:`qcf_studio.engine.gan.accelerator.tune_process`; the one place workers
    get it,
    on any cluster). Dask's nannies (the embedded cluster's, ``dask worker``, dask-jobqueue) set
    ``MALLOC_TRIM_THRESHOLD_=65536``, under which glibc trims the task thread's heap after each large free
    (docs/benchmarks.md, "Numbers behind engine/accel"); the thresholds set here override that variable."""
    torch.set_num_threads(max(1, get_worker().state.nthreads))
    tune_process()


def run_member_task(spec: Spec, member: int, data: MeasuredData, run_id: str) -> dict[str, Any]:
    """Dask task: train one member on this worker's device with as many torch threads as it has threads."""
    _task_setup()
    worker = get_worker()
    device = _worker_device(spec)
    stop = Event(f"stop-{run_id}")
    sink = DaskEventSink(topic_for(run_id))
    store = None
    if spec.cluster.checkpoint_every and spec.training.method == "gan":
        store = DaskCheckpointStore(_checkpoint_name(run_id, member))
        store.load()
    event = {"type": "started", "member": member, "worker": worker.address}
    if store is not None and store.step:
        event.update(type="resumed", step=store.step)
    sink.worker.log_event(topic_for(run_id), event)
    result = train_member(spec, member, data, sink, stop_requested=stop.is_set, checkpoints=store, device=device)
    return asdict(result)


def _worker_host() -> str:
    """The address of the interface this worker talks to its peers on (loopback in the embedded cluster)."""
    return urlparse(get_worker().address).hostname or "127.0.0.1"


def _rendezvous(run_id: str, member: int, rank: int, ranks: int, timeout: float) -> dist.Store:
    """Rank 0 hosts a TCPStore on its worker's interface (:func:`qcf_studio.engine.run.parallel.host_store`); the others
    find its address in a Dask Variable."""
    address = Variable(f"qcf-rendezvous-{run_id}-{member}")
    wait_for = timedelta(seconds=timeout)
    if rank == 0:
        host = _worker_host()
        store = host_store(host, ranks, timeout)
        address.set(f"{host}:{store.port}")
        return store
    try:
        host, port = str(address.get(timeout=timeout)).rsplit(":", 1)
    except TimeoutError:
        raise TimeoutError(f"member {member} rank {rank}: rank 0 did not start within {timeout:g} s") from None
    return dist.TCPStore(host, int(port), ranks, False, timeout=wait_for)


def run_rank_task(spec: Spec, member: int, rank: int, data: MeasuredData, run_id: str) -> dict[str, Any]:
    """Dask task: one rank of data-parallel member ``member``; rank 0 streams metrics and returns the result."""
    _task_setup()
    worker = get_worker()
    c = spec.cluster
    lost = Event(f"qcf-rank-lost-{run_id}-{member}")
    if lost.is_set():  # a rerun of a rank whose worker died: its group has already given up
        raise RuntimeError(f"member {member}: a data-parallel rank was lost; the group stopped")
    topic = topic_for(run_id)
    worker.log_event(topic, {"type": "started", "member": member, "rank": rank, "worker": worker.address})
    sharing = None
    try:
        device = _worker_device(spec)
        store = _rendezvous(run_id, member, rank, c.ranks, c.timeout)
        sharing = GradientSharing(
            store,
            rank,
            c.ranks,
            ShareSchedule(c.schedule, c.group_size, c.sync_every),
            c.timeout,
            device,
            host=_worker_host(),
        )
        if rank == 0:
            sink: MetricsSink = DaskEventSink(topic)
            stop = Event(f"stop-{run_id}").is_set
        else:
            sink, stop = RankEventSink(topic, rank), lambda: False
        result = train_rank(spec, member, rank, data, sink, sharing, stop_requested=stop, device=device)
    except BaseException as e:
        lost.set()
        if sharing is not None:
            sharing.close()  # peers blocked on this rank get an error now, not after the timeout
        raise RuntimeError(f"member {member} rank {rank}: {e}") from e
    return asdict(result)


def run_reference_task(spec: Spec, data: MeasuredData) -> dict[str, Any]:
    """Dask task: the maximum-likelihood reference fit of a GAN run's data (not streamed; on the CPU)."""
    _task_setup()
    return asdict(reference_fit(spec, data))


@dataclass
class RunHandle:
    """A run in flight on a Dask cluster; members report to the ``sink`` given to :func:`start_run`."""

    client: Client
    spec: Spec
    run_id: str
    futures: list[Future]
    started: float = field(default_factory=time.perf_counter)
    history: HistorySink = field(default_factory=HistorySink)  # kept for members that die
    workers: dict[int, str] = field(default_factory=dict)  # member → worker of its task (rank 0's)
    rank_workers: dict[tuple[int, int], str] = field(default_factory=dict)  # (member, rank) → worker
    rank_history: dict[int, HistorySink] = field(default_factory=dict)  # member → metrics of its ranks > 0
    resumed: dict[int, list[int]] = field(default_factory=dict)  # member → steps it resumed from
    lock: threading.Lock = field(default_factory=threading.Lock)
    reference_future: Future | None = None
    rank_futures: dict[int, list[Future]] = field(default_factory=dict)  # data_parallel: member → ranks 1..R-1

    def stop(self) -> None:
        """Ask every member to stop at its next check; they return what they have so far."""
        Event(f"stop-{self.run_id}", client=self.client).set()
        if self.reference_future is not None:
            self.reference_future.cancel()

    def record(self, msg: dict[str, Any]) -> None:
        with self.lock:
            kind = msg["type"]
            if kind == "rank_metrics":
                sink = self.rank_history.setdefault(msg["member"], HistorySink())
                sink.log_metrics(msg["rank"], msg["step"], msg["metrics"])
            else:
                replay(msg, self.history)
            if kind in ("started", "resumed"):  # these messages always name their member
                member: int = msg["member"]
                self.rank_workers[(member, msg.get("rank", 0))] = msg["worker"]
                if msg.get("rank", 0) == 0:
                    self.workers[member] = msg["worker"]
                if kind == "resumed":  # metrics after the checkpoint will come again
                    self.resumed.setdefault(member, []).append(msg["step"])
                    cols = self.history.columns.get(member)
                    if cols:
                        keep = sum(1 for s in cols["step"] if s <= msg["step"])
                        for values in cols.values():
                            del values[keep:]

    def results(self, timeout: float | None = None) -> list[MemberResult]:
        """Wait for every member; a member whose task (or any of its ranks) failed is kept as ``failed``
        with the metrics it streamed."""
        wait(self.futures + [f for fs in self.rank_futures.values() for f in fs], timeout=timeout)
        out = []
        for member, fut in enumerate(self.futures):
            group = [fut, *self.rank_futures.get(member, [])]
            broken = [f for f in group if f.status != "finished"]
            if not broken:
                ranks = [MemberResult(**f.result()) for f in group]
                result = ranks[0]  # the generator is one; every rank analysed its own events
                result.events_processed = sum(r.events_processed for r in ranks)
                result.comm_seconds = float(np.mean([r.comm_seconds for r in ranks]))
                out.append(result)
            else:
                errors = [repr(f.exception()) if f.status == "error" else f.status or "no status" for f in broken]
                with self.lock:
                    metrics = self.history.of(member)
                out.append(failed_member(self.spec, member, metrics, f"member {member}: {'; '.join(errors)}"))
        self.client.unsubscribe_topic(topic_for(self.run_id))
        self._forget()
        return out

    def _forget(self) -> None:
        """Drop the run's checkpoints and rendezvous addresses from the scheduler."""
        for member in range(len(self.futures)):
            for name in (_checkpoint_name(self.run_id, member), f"qcf-rendezvous-{self.run_id}-{member}"):
                try:
                    Variable(name, client=self.client).delete()
                except Exception:  # noqa: BLE001 (never created, or the scheduler is gone)
                    pass

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


def _hosts(client: Client, device: str) -> tuple[list[str], int, str]:
    """The workers a run's members may use, how many members they train at once, and what those slots are.

    For ``cluster.device: cuda`` only the workers offering the ``GPU`` resource count, with as many slots as
    GPU units (and threads); a ``ValueError`` says so at once if there are none, where the tasks would
    otherwise wait forever. Otherwise every worker counts, with a slot per thread.
    """
    info = client.scheduler_info(n_workers=-1)["workers"]
    if device != "cuda":
        return sorted(info), sum(w["nthreads"] for w in info.values()), "threads"
    gpus = {a: min(w["nthreads"], int((w.get("resources") or {}).get("GPU", 0))) for a, w in info.items()}
    gpus = {a: n for a, n in gpus.items() if n >= 1}
    if not gpus:
        raise ValueError(
            "cluster.device is cuda but no worker offers the GPU resource; start workers with "
            "`dask worker --resources GPU=1` (one per GPU)"
        )
    return sorted(gpus), sum(gpus.values()), "GPU slots"


def start_run(
    client: Client,
    spec: Spec,
    data: MeasuredData,
    sink: MetricsSink | None = None,
    priority: int = 0,
) -> RunHandle:
    """Submit every ensemble member of ``spec`` as its own task; their reports reach ``sink`` here.

    ``priority`` is added to the tasks' Dask priorities (member m gets ``priority - m``): a campaign gives
    its earlier fits higher ones, so that their members run before a later fit's and fits finish in turn.

    Raises ``ValueError`` before submitting anything when the cluster cannot host the spec: too few
    workers for the data-parallel ranks, or ``cluster.device: cuda`` and no worker offering ``GPU``.
    """
    run_id = new_run_id()
    handle = RunHandle(client, spec, run_id, futures=[])

    def handler(event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        handle.record(msg)
        if sink is not None:
            replay(msg, sink)

    members, c = spec.ensemble.members, spec.cluster
    workers, slots, unit = _hosts(client, c.device)
    if c.mode == "data_parallel" and (len(workers) < c.ranks or slots < members * c.ranks):
        raise ValueError(
            f"cluster.ranks: data_parallel runs {members} × {c.ranks} ranks at once on distinct "
            f"workers; the cluster has {len(workers)} workers with {slots} {unit}"
        )
    needs = {"resources": {"GPU": 1}} if c.device == "cuda" else {}
    client.subscribe_topic(topic_for(run_id), handler)
    Event(f"stop-{run_id}", client=client).clear()
    # Once per run, to every worker (up to 1 GiB from a file; 100 000 events of proxy1d are 1.6 MB): a task
    # rerun after its worker died finds the data on another. The spec goes with each task as the object, a
    # copy of its own: Dask may pickle it after submit returns, or hand it over as is on an in-process cluster.
    data_future = client.scatter(data, broadcast=True, hash=False)
    sent = copy.deepcopy(spec)

    def place(slot: int) -> dict[str, Any]:
        # One task per worker where possible; a loose restriction, so a rerun may go anywhere (with cuda:
        # anywhere with a GPU, since resource restrictions are strict).
        return {"workers": [workers[slot % len(workers)]], "allow_other_workers": True} if workers else {}

    if c.mode == "data_parallel":
        for m in range(members):
            ranks = [
                client.submit(
                    run_rank_task,
                    sent,
                    m,
                    r,
                    data_future,
                    run_id,
                    key=member_key(run_id, m, r),
                    pure=False,
                    priority=priority - m,
                    **place(m * c.ranks + r),
                    **needs,
                )
                for r in range(c.ranks)
            ]
            handle.futures.append(ranks[0])
            handle.rank_futures[m] = ranks[1:]
    else:
        if c.checkpoint_every and spec.training.method == "gan":
            for m in range(members):
                DaskCheckpointStore.create(_checkpoint_name(run_id, m), client)
        handle.futures = [
            client.submit(
                run_member_task,
                sent,
                m,
                data_future,
                run_id,
                key=member_key(run_id, m),
                pure=False,
                priority=priority - m,
                **place(m),
                **needs,
            )
            for m in range(members)
        ]
    if spec.training.method == "gan" and spec.training.mle_reference:
        handle.reference_future = client.submit(
            run_reference_task, sent, data_future, key=reference_key(run_id), pure=False, priority=priority - 1
        )
    return handle
