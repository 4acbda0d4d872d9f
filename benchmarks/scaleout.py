"""``qcf-studio bench ensemble|dp``: scaling of whole runs on an embedded Dask LocalCluster.

- ensemble: wall time of one member alone on one worker, then of ``--members`` k members on k
  workers (same spec, same steps); the ratio is the ensemble overhead (target ≤ 1.15).
- dp: for each ``--ranks`` R, one member trained by R data-parallel ranks on R workers of one
  thread: seconds per step, the part of it spent in collectives (all-reduce of the generator's
  gradients, or the grouped schedule's exchanges) and events analysed per second over all ranks.
- gan ``--members K``: the ``bench gan`` step (the same trainer, discriminator and events per
  step) on K workers at once, as the K members of an ensemble train: generated events per second
  of the whole machine, counted over one window of time common to all members.

Wall times are taken from submission to the last result, without the cluster's start-up; each
worker uses one torch thread, as in the dashboard's embedded cluster. ``device`` is the runs'
``cluster.device``; with ``cuda`` the embedded cluster has one worker per GPU (``qcf_studio.engine.run.cluster``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from qcf_studio.benchmarks.bench import bench_data, disc_label, gan_batch, gan_trainer
from qcf_studio.engine.gan.accelerator import tune_process
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.run.cluster import close, local_client
from qcf_studio.engine.run.distributed import start_run
from qcf_studio.engine.run.runner import measured_data
from qcf_studio.engine.spec import Spec, default_spec, parse_spec

__all__ = ["bench_ensemble", "bench_data_parallel", "bench_gan_members"]


def _spec(kind: str, steps: int, members: int, cluster: dict[str, Any]) -> Spec:
    raw = default_spec(kind).to_dict()
    raw["training"].update(steps=steps, mle_reference=False)
    raw["ensemble"]["members"] = members
    raw["cluster"].update(cluster)
    return parse_spec(raw)


def _timed_run(spec: Spec, workers: int) -> tuple[float, list[Any]]:
    client = local_client(workers=workers, device=spec.cluster.device)
    try:
        data = measured_data(spec)
        t0 = time.perf_counter()
        members = start_run(client, spec, data).results()
        wall = time.perf_counter() - t0
    finally:
        close(client)
    bad = [m.error for m in members if m.status != "completed"]
    if bad:
        raise RuntimeError(f"benchmark run failed: {bad[0]}")
    return wall, members


def bench_ensemble(kind: str, members: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    """Wall time of ``members`` members on as many workers vs one member alone."""
    one, _ = _timed_run(_spec(kind, steps, 1, {"workers": 1, "device": device}), workers=1)
    many, results = _timed_run(_spec(kind, steps, members, {"workers": members, "device": device}), workers=members)
    return {
        "bench": "ensemble",
        "problem": kind,
        "steps": steps,
        "members": members,
        "wall_one_member": one,
        "wall_members": many,
        "ratio": many / one,
        "member_train_seconds": [r.wall_seconds for r in results],
    }


def bench_data_parallel(
    kind: str, ranks: list[int], steps: int, schedule: str = "sync", sync_every: int = 10, device: str = "cpu"
) -> dict[str, Any]:
    """Per-step time, communication time and analysis rate of one member trained by R ranks, per R."""
    rows = []
    for r in ranks:
        cluster = {
            "workers": r,
            "mode": "data_parallel",
            "ranks": r,
            "schedule": schedule,
            "group_size": 1,
            "sync_every": sync_every,
            "device": device,
        }
        wall, [member] = _timed_run(_spec(kind, steps, 1, cluster), workers=r)
        rows.append(
            {
                "ranks": r,
                "wall_seconds": wall,
                "train_seconds": member.wall_seconds,
                "seconds_per_step": member.wall_seconds / steps,
                "comm_seconds_per_step": member.comm_seconds / steps,
                "events_per_second": member.events_processed / member.wall_seconds,
            }
        )
    return {"bench": "dp", "problem": kind, "steps": steps, "schedule": schedule, "results": rows}


def bench_gan_members(
    kind: str,
    events: int,
    members: int,
    threads: int = 1,
    width: int = 64,
    depth: int = 2,
    window: float = 10.0,
    warmup: float = 10.0,
) -> dict[str, Any]:
    """Generated events per second of ``members`` GAN trainers stepping at once on as many workers.

    Every member builds the ``bench gan`` trainer, trains untimed until a start time common to all,
    then counts the steps it completes within the next ``window`` seconds. The rate is the
    generated events of all those steps over ``window`` (steps that straddle the window's ends are
    not counted, so it errs low). A member not ready by the start time (``warmup`` seconds after
    submission) fails the benchmark rather than measure a machine that is partly idle.
    """
    problem = get_problem(kind)
    data = bench_data(problem)
    _, _, n = gan_batch(problem, events)
    client = local_client(workers=members, device="cpu")
    try:
        start = time.time() + warmup
        futures = [
            client.submit(
                _gan_window,
                kind,
                data,
                events,
                width,
                depth,
                threads,
                start,
                window,
                key=f"bench-gan-member-{k}",
                pure=False,
            )
            for k in range(members)
        ]
        rows = client.gather(futures)
    finally:
        close(client)
    late = [k for k, r in enumerate(rows) if r["late"]]
    if late:
        raise RuntimeError(f"members {late} were not ready {warmup:g} s after submission; raise --warmup")
    steps = sum(r["steps"] for r in rows)
    return {
        "bench": "gan",
        "problem": kind,
        "members": members,
        "threads_per_member": threads,
        "events": n,
        "disc": rows[0]["disc"],
        "window_seconds": window,
        "member_steps": [r["steps"] for r in rows],
        "member_median_seconds": [r["median_seconds"] for r in rows],
        "events_per_second": steps * n / window,
        "events_analysed_per_second": 2 * steps * n / window,
    }


def _gan_window(
    kind: str, data: Any, events: int, width: int, depth: int, threads: int, start: float, window: float
) -> dict[str, Any]:
    """On a worker: a ``bench gan`` trainer's steps completed within ``[start, start + window]``."""
    torch.set_num_threads(threads)
    tune_process()  # as the training tasks do (engine.run.distributed._task_setup)
    trainer = gan_trainer(get_problem(kind), data, events, width, depth)
    for _ in range(3):
        trainer.train_step()
    late = time.time() > start
    while time.time() < start:
        trainer.train_step()
    times: list[float] = []
    end = start + window
    while True:
        t0 = time.perf_counter()
        trainer.train_step()
        if time.time() > end:
            break
        times.append(time.perf_counter() - t0)
    return {
        "steps": len(times),
        "median_seconds": statistics.median(times) if times else float("nan"),
        "late": late,
        "disc": disc_label(trainer, width, depth),
    }
