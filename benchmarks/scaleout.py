"""``qcf-studio bench ensemble|dp``: scaling of whole runs on an embedded Dask LocalCluster.

- ensemble: wall time of one member alone on one worker, then of ``--members`` k members on k
  workers (same spec, same steps); the ratio is the ensemble overhead (target ≤ 1.15).
- dp: for each ``--ranks`` R, one member trained by R data-parallel ranks on R workers of one
  thread: seconds per step, the part of it spent in collectives (all-reduce of the generator's
  gradients, or the grouped schedule's exchanges) and events analysed per second over all ranks.

Wall times are taken from submission to the last result, without the cluster's start-up; each
worker uses one torch thread, as in the dashboard's embedded cluster. ``device`` is the runs'
``cluster.device``; with ``cuda`` the embedded cluster has one worker per GPU (``app.cluster``).
"""

from __future__ import annotations

import time
from typing import Any

from app.cluster import close, connect
from engine.distributed import start_run
from engine.runner import measured_data
from engine.spec import Spec, default_spec, parse_spec

__all__ = ["bench_ensemble", "bench_data_parallel"]


def _spec(kind: str, steps: int, members: int, cluster: dict[str, Any]) -> Spec:
    raw = default_spec(kind).to_dict()
    raw["training"].update(steps=steps, mle_reference=False)
    raw["ensemble"]["members"] = members
    raw["cluster"].update(cluster)
    return parse_spec(raw)


def _timed_run(spec: Spec, workers: int) -> tuple[float, list[Any]]:
    client = connect(workers=workers, device=spec.cluster.device)
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
    return {"bench": "ensemble", "problem": kind, "steps": steps, "members": members,
            "wall_one_member": one, "wall_members": many, "ratio": many / one,
            "member_train_seconds": [r.wall_seconds for r in results]}


def bench_data_parallel(kind: str, ranks: list[int], steps: int, schedule: str = "sync",
                        sync_every: int = 10, device: str = "cpu") -> dict[str, Any]:
    """Per-step time, communication time and analysis rate of one member trained by R ranks, per R."""
    rows = []
    for r in ranks:
        cluster = {"workers": r, "mode": "data_parallel", "ranks": r, "schedule": schedule,
                   "group_size": 1, "sync_every": sync_every, "device": device}
        wall, [member] = _timed_run(_spec(kind, steps, 1, cluster), workers=r)
        rows.append({"ranks": r, "wall_seconds": wall, "train_seconds": member.wall_seconds,
                     "seconds_per_step": member.wall_seconds / steps,
                     "comm_seconds_per_step": member.comm_seconds / steps,
                     "events_per_second": member.events_processed / member.wall_seconds})
    return {"bench": "dp", "problem": kind, "steps": steps, "schedule": schedule, "results": rows}
