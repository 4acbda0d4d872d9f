"""Connecting to Dask: an embedded LocalCluster by default, or an existing scheduler."""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from typing import Any

import dask
import torch
from distributed import Client, LocalCluster, Worker, WorkerPlugin

from engine.task_keys import parse_task_key

__all__ = ["connect", "close", "describe_task", "worker_rows"]


def connect(scheduler: str | None = None, workers: int = 2, device: str = "auto", security: Any = None) -> Client:
    """A client on ``scheduler``, or on a new LocalCluster of ``workers`` single-threaded processes.

    ``security`` (a ``distributed.Security``, see :func:`tls_security`) is used for a remote scheduler
    (``tls://`` addresses); without it, Dask's configuration (``distributed.comm.tls.*``) applies. The
    embedded cluster listens on the loopback interface only, and its workers ignore SIGINT and SIGTERM
    (:class:`IgnoreStopSignals`) so that a terminal's Ctrl-C or a batch system's SIGTERM reaches the client,
    which stops the members and saves what they have, instead of killing the workers with it.

    Each worker process runs one training task at a time with one torch thread (set explicitly by
    the task; ``OMP_NUM_THREADS=1`` keeps other libraries from oversubscribing the cores).
    Where this machine has CUDA GPUs and ``device`` (``cluster.device``) is not ``cpu``, the
    embedded cluster has one worker per GPU instead of ``workers``, each offering the resource
    ``GPU=1``; worker k trains on GPU k (:func:`engine.devices.cuda_index`). The embedded cluster
    is closed with the client.
    """
    if scheduler:
        try:
            return Client(scheduler, timeout="20s", **({"security": security} if security is not None else {}))
        except (OSError, TypeError) as e:  # refused, unreachable, timed out, TLS handshake failed or not set up
            hint = ""
            if scheduler.startswith("tls://") and security is None:
                hint = "; a TLS scheduler needs --tls-ca-file and --tls-cert (or Dask's distributed.comm.tls config)"
            raise ValueError(f"--scheduler {scheduler}: cannot connect ({type(e).__name__}: {str(e)[:200]}){hint}") \
                from None
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in workers, which pins glibc's mmap threshold: every
    # multi-MB torch tensor is then mmapped and unmapped each step (docs/benchmarks.md: proxy1d step times).
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    gpus = 0 if device == "cpu" else torch.cuda.device_count()
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = _local_cluster(workers, gpus)
    client = Client(cluster)
    client._qcf_owned_cluster = cluster  # closed in close()
    # Training fills every core; at normal priority it starved the web server and the browser on a 2-core
    # machine (a Stop click took 20-30 s to arrive). At nice 10 the workers still get all idle CPU.
    client.register_plugin(IgnoreStopSignals())
    client.register_plugin(LowerPriority(10))
    client.register_plugin(PreloadEngine())
    return client


def tls_security(ca_file: str | None, cert: str | None, key: str | None) -> Any:
    """A ``distributed.Security`` for a remote scheduler that requires TLS (``tls://``): the CA that signed
    the scheduler's certificate, and this client's certificate and key (one file may hold both); ``None``
    if none is given (Dask's own configuration then applies). A ``ValueError`` names a missing file."""
    if not (ca_file or cert or key):
        return None
    from distributed.security import Security

    for option, path in (("--tls-ca-file", ca_file), ("--tls-cert", cert), ("--tls-key", key)):
        if path and not os.path.isfile(path):
            raise ValueError(f"{option} {path}: no such file")
    if not (ca_file and cert):
        raise ValueError("--tls-ca-file and --tls-cert are both needed for a TLS scheduler (--tls-key if the "
                         "key is in its own file)")
    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


class IgnoreStopSignals(WorkerPlugin):
    """Make each embedded worker process (restarted ones included) ignore SIGINT and SIGTERM.

    They are children of the client's process, so a terminal's Ctrl-C (sent to the whole process group)
    and a batch system's SIGTERM reach them too, and used to kill them with the members' work. The client
    handles both signals (:mod:`app.signals`); the workers still end with it, since Dask's nanny ends its
    worker when the parent goes away, and kills it (SIGKILL) if it does not stop when asked.
    """

    name = "qcf-studio-ignore-stop-signals"

    def setup(self, worker: Worker) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)


class LowerPriority(WorkerPlugin):
    """Raise the niceness of each worker process (restarted workers included) by ``increment``."""

    name = "qcf-studio-lower-priority"

    def __init__(self, increment: int) -> None:
        self.increment = increment

    def setup(self, worker: Worker) -> None:
        os.nice(self.increment)


class PreloadEngine(WorkerPlugin):
    """Import the engine (and torch's optimiser machinery) when a worker starts, not in the first task.

    Constructing the first Adam optimiser in a process imports ``torch._dynamo`` (1.7 s measured);
    paid here, it overlaps the client's preparation of the run instead of delaying the first member.
    """

    name = "qcf-studio-preload-engine"

    def setup(self, worker: Worker) -> None:
        import torch

        import engine.distributed  # noqa: F401

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _local_cluster(workers: int, gpus: int = 0) -> LocalCluster:
    """``workers`` CPU workers, or with ``gpus`` one worker per GPU offering ``GPU=1`` (named 0, 1, ...).

    The cluster listens on loopback only and speaks TLS with a certificate made for it in memory
    (``Security.temporary``): on a shared machine (a login node) other users reach loopback too, and a Dask
    scheduler runs whatever code its clients send; without the certificate they cannot connect.
    """
    from distributed.security import Security

    # The scheduler's HTTP server (the dashboard is off) takes any free port when 8787 is busy, and said so on
    # stderr at every run of a machine with another Dask cluster on it.
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    # That server and the workers' answer anyone on loopback without TLS: serve only /health (Dask's info pages,
    # JSON and proxy routes would show other users of the machine this cluster's workers, tasks and logs).
    health_only = {"distributed.scheduler.http.routes": ["distributed.http.health"],
                   "distributed.worker.http.routes": ["distributed.http.health"]}
    with dask.config.set(health_only):
        return LocalCluster(
            n_workers=gpus or workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",  # scheduler and workers reachable from this machine only ...
            security=Security.temporary(),  # ... and only by this client
            dashboard_address=None,
            silence_logs=logging.WARNING,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            **({"resources": {"GPU": 1}} if gpus else {}),
        )


def close(client: Client) -> None:
    cluster = getattr(client, "_qcf_owned_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def describe_task(key: Any, run_names: dict[str, str]) -> str:
    """What a task key of :func:`engine.distributed.start_run` (:mod:`engine.task_keys`) is:
    ``closure-1d · member 1 · rank 0``."""
    task = parse_task_key(key)
    if task is None:
        return key if isinstance(key, str) else str(key)  # another client's task on a shared scheduler
    run = run_names.get(task.run_id, f"run {task.run_id}")
    if task.is_reference:
        return f"{run} · MLE reference"
    rank = f" · rank {task.rank}" if task.rank is not None else ""
    return f"{run} · member {task.member}{rank}"


def worker_rows(client: Client, run_names: dict[str, str]) -> list[dict[str, Any]]:
    """One row per worker of the cluster: its name, host, threads, CPU load, memory, resources (GPUs) and
    the tasks it holds (``run · member · rank``). ``run_names`` maps a run id to its spec name."""
    workers = client.scheduler_info(n_workers=-1)["workers"]  # refreshed by the client every few seconds
    processing = client.processing()
    rows = []
    for address, w in sorted(workers.items(), key=lambda kv: str(kv[1].get("name"))):
        metrics = w.get("metrics", {})
        tasks = [describe_task(k, run_names) for k in processing.get(address, ())]
        rows.append({
            "worker": str(w.get("name", address)), "address": address, "host": w.get("host", ""),
            "threads": int(w.get("nthreads", 0)), "cpu_percent": float(metrics.get("cpu", 0.0)),
            "memory_mb": float(metrics.get("memory", 0)) / 2**20,
            "memory_limit_mb": float(w.get("memory_limit") or 0) / 2**20,
            "resources": ", ".join(f"{k}={v:g}" for k, v in sorted((w.get("resources") or {}).items())),
            "tasks": "; ".join(tasks) if tasks else "idle",
        })
    return rows
