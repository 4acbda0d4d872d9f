"""The embedded Dask cluster: a LocalCluster of worker processes on this machine that only its own client can
use, for the dashboard, ``qcf-studio run`` and the benchmarks alike.

Its scheduler and workers listen on loopback only and speak TLS with a certificate made for it in memory
(``Security.temporary``): on a shared machine (a login node) other users reach loopback too, and a Dask
scheduler runs whatever code its clients send. Their HTTP servers (no TLS) serve ``/health`` only. Each
worker runs one task at a time with one torch thread, at lower priority, ignoring SIGINT and SIGTERM.
Glibc's malloc thresholds are not set here: every training task sets them on its worker
(``qcf_studio.engine.run.distributed``), on any cluster. Connecting to a remote scheduler is
``qcf_studio.app.cluster``'s.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings

import dask
import torch
from distributed import Client, LocalCluster, Worker, WorkerPlugin

__all__ = ["local_client", "local_cluster", "close", "IgnoreStopSignals", "LowerPriority", "PreloadEngine"]


def local_client(workers: int = 2, device: str = "auto") -> Client:
    """A client on a new embedded cluster (:func:`local_cluster`) of ``workers`` single-threaded processes;
    :func:`close` closes both.

    Where this machine has CUDA GPUs and ``device`` (``cluster.device``) is not ``cpu``, the cluster has one
    worker per GPU instead of ``workers``, each offering the resource ``GPU=1``; worker k trains on GPU k
    (:func:`qcf_studio.engine.run.devices.cuda_index`). Its workers ignore SIGINT and SIGTERM
    (:class:`IgnoreStopSignals`),
    so that a terminal's Ctrl-C or a batch system's SIGTERM reaches the client, which stops the members and
    saves what they have, instead of killing the workers with it. While the cluster is up, this process's torch
    works with one thread (its share beside workers that fill the cores); :func:`close` gives back the number it had.
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    gpus = 0 if device == "cpu" else torch.cuda.device_count()
    cluster = local_cluster(workers, gpus)
    client = Client(cluster)
    client._qcf_owned_cluster = cluster  # type: ignore[attr-defined]  # closed with the client in close()
    # Training fills every core; at normal priority it starved the web server and the browser on a 2-core
    # machine (a Stop click took tens of seconds to arrive). At nice 10 the workers still get all idle CPU.
    client.register_plugin(IgnoreStopSignals())
    client.register_plugin(LowerPriority(10))
    client.register_plugin(PreloadEngine())
    _client_threads_down()
    return client


# The client's own torch work (pseudo-data, results) runs beside workers that fill every core at nice 10: with
# torch's default of a thread per core it spun against them at normal priority, and a campaign's pseudo-data
# took 20 times as long (docs/benchmarks.md, "GAN calibration campaigns"). One thread while an embedded cluster is up.
_embedded = {"count": 0, "threads": 0}
_embedded_lock = threading.Lock()


def _client_threads_down() -> None:
    with _embedded_lock:
        if _embedded["count"] == 0:
            _embedded["threads"] = torch.get_num_threads()
        _embedded["count"] += 1
        torch.set_num_threads(1)


def _client_threads_restored() -> None:
    with _embedded_lock:
        _embedded["count"] -= 1
        if _embedded["count"] == 0:
            torch.set_num_threads(_embedded["threads"])


def local_cluster(workers: int, gpus: int = 0) -> LocalCluster:
    """``workers`` CPU workers, or with ``gpus`` one worker per GPU offering ``GPU=1`` (named 0, 1, ...), on
    loopback with a temporary TLS certificate (see the module's docstring)."""
    from distributed.security import Security

    # The scheduler's HTTP server (the dashboard is off) takes any free port when 8787 is busy, and said so on
    # stderr at every run of a machine with another Dask cluster on it.
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    # That server and the workers' answer anyone on loopback without TLS: serve only /health (Dask's info pages,
    # JSON and proxy routes would show other users of the machine this cluster's workers, tasks and logs).
    health_only = {
        "distributed.scheduler.http.routes": ["distributed.http.health"],
        "distributed.worker.http.routes": ["distributed.http.health"],
    }
    with dask.config.set(health_only):
        return LocalCluster(
            n_workers=gpus or workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",  # scheduler and workers reachable from this machine only ...
            security=Security.temporary(),  # ... and only by this client
            dashboard_address=None,
            silence_logs=logging.WARNING,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # no other library oversubscribes the cores
            **({"resources": {"GPU": 1}} if gpus else {}),
        )


def close(client: Client) -> None:
    """Close ``client`` and the embedded cluster it was made with, if any."""
    cluster = getattr(client, "_qcf_owned_cluster", None)
    client.close()
    if cluster is not None:
        try:
            cluster.close()
        finally:
            _client_threads_restored()


class IgnoreStopSignals(WorkerPlugin):
    """Make each embedded worker process (restarted ones included) ignore SIGINT and SIGTERM.

    They are children of the client's process, so a terminal's Ctrl-C (sent to the whole process group)
    and a batch system's SIGTERM reach them too, and used to kill them with the members' work. The client
    handles both signals (``qcf_studio.app.signals``); the workers still end with it, since Dask's nanny ends its
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

        import qcf_studio.engine.run.distributed  # noqa: F401

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
