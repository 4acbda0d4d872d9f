"""Connecting to Dask for the app: an existing scheduler (TLS optional), or the embedded cluster
(:mod:`qcf_studio.engine.run.cluster`); and what the Cluster tab shows of the workers and their tasks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client

from qcf_studio.engine.run.cluster import close, local_client
from qcf_studio.engine.run.task_keys import parse_task_key

__all__ = ["connect", "close", "client_for", "cluster_headline", "describe_task", "worker_rows"]


def connect(scheduler: str | None = None, workers: int = 2, device: str = "auto", security: Any = None) -> Client:
    """A client on ``scheduler``, or on a new embedded cluster of ``workers`` single-threaded processes
    (:func:`qcf_studio.engine.run.cluster.local_client`: loopback and TLS only, one worker per GPU where CUDA GPUs are
    visible
    and ``device`` is not ``cpu``; closed with the client by :func:`close`).

    ``security`` (a ``distributed.Security``, see :func:`tls_security`) is used for a remote scheduler
    (``tls://`` addresses); without it, Dask's configuration (``distributed.comm.tls.*``) applies.
    """
    if scheduler:
        try:
            return Client(scheduler, timeout="20s", **({"security": security} if security is not None else {}))
        except (OSError, TypeError) as e:  # refused, unreachable, timed out, TLS handshake failed or not set up
            hint = ""
            if scheduler.startswith("tls://") and security is None:
                hint = "; a TLS scheduler needs --tls-ca-file and --tls-cert (or Dask's distributed.comm.tls config)"
            raise ValueError(
                f"--scheduler {scheduler}: cannot connect ({type(e).__name__}: {str(e)[:200]}){hint}"
            ) from None
    return local_client(workers, device)


@contextmanager
def client_for(
    cluster: str | Client | None, workers: int = 2, device: str = "auto", security: Any = None
) -> Iterator[Client]:
    """A client for the time of a ``with`` block: ``cluster`` itself when it is a ``Client`` (left open), else
    :func:`connect` to the scheduler address ``cluster`` or, for ``None``, to a new embedded cluster; those two
    are closed (:func:`close`) when the block ends."""
    if isinstance(cluster, Client):
        yield cluster
        return
    client = connect(cluster, workers, device, security)
    try:
        yield client
    finally:
        close(client)


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
        raise ValueError(
            "--tls-ca-file and --tls-cert are both needed for a TLS scheduler (--tls-key if the key is in its own file)"
        )
    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def describe_task(key: Any, run_names: dict[str, str]) -> str:
    """What a task key of :func:`qcf_studio.engine.run.distributed.start_run` (:mod:`qcf_studio.engine.run.task_keys`)
    is:
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
        rows.append(
            {
                "worker": str(w.get("name", address)),
                "address": address,
                "host": w.get("host", ""),
                "threads": int(w.get("nthreads", 0)),
                "cpu_percent": float(metrics.get("cpu", 0.0)),
                "memory_mb": float(metrics.get("memory", 0)) / 2**20,
                "memory_limit_mb": float(w.get("memory_limit") or 0) / 2**20,
                "resources": ", ".join(f"{k}={v:g}" for k, v in sorted((w.get("resources") or {}).items())),
                "tasks": "; ".join(tasks) if tasks else "idle",
            }
        )
    return rows


def cluster_headline(client: Client | None) -> str:
    """The page header's line about the cluster: ``Dask tls://127.0.0.1:40123 · 2 workers, 2 threads``.

    One small request (the scheduler's totals, no per-worker records), sent without touching the client's cached
    ``scheduler_info()``, which other threads read for the workers' records."""
    if client is None:
        return "no cluster"
    try:
        info = client.sync(client.scheduler.identity, n_workers=0)
    except Exception as e:  # noqa: BLE001 (a scheduler that went away must not break the page)
        return f"Dask unreachable ({type(e).__name__})"
    n, threads = int(info.get("n_workers", 0)), int(info.get("total_threads", 0))
    return f"Dask {info.get('address', '?')} · {n} worker{'s' * (n != 1)}, {threads} thread{'s' * (threads != 1)}"
