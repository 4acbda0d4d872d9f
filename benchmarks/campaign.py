"""``qcf-studio bench campaign``: how fast a closure campaign fits, and how it scales with workers.

For each worker count in ``--ranks`` (default 1,2), a fresh embedded LocalCluster fits ``--replicas``
replicas of the problem's default spec by ``--method`` (gan: one member of ``--steps`` steps; mle: the
likelihood fit) into a temporary folder. Reported per worker count: the wall time of the whole campaign
from the first submission to the last fit's end (the cluster's start-up left out) and the fits per hour
that makes; then the ratio of fits per hour of the largest to the smallest worker count. (Counting from the
first fit's end instead favours k workers, whose first k fits end together.)
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from qcf_studio.engine.campaign.driver import CampaignRunner
from qcf_studio.engine.campaign.plan import CampaignPlan
from qcf_studio.engine.run.cluster import close, local_client
from qcf_studio.engine.spec import Spec, default_spec, parse_spec

__all__ = ["bench_campaign"]


def campaign_spec(kind: str, method: str, replicas: int, steps: int) -> Spec:
    raw = default_spec(kind).to_dict()
    raw["name"] = f"bench-{kind}-{method}"
    raw["training"].update(method=method, steps=steps, mle_reference=False)
    raw["ensemble"].update(members=1, bootstrap=False)
    raw["campaign"] = {"replicas": replicas, "methods": [method]}
    return parse_spec(raw)


def _one(spec: Spec, workers: int) -> dict[str, float]:
    client = local_client(workers=workers)
    try:
        with tempfile.TemporaryDirectory(prefix="qcf-bench-campaign-") as out:
            runner = CampaignRunner(client, CampaignPlan(spec, out), summary_every=1e9)
            runner.load_finished()
            t0 = time.perf_counter()
            summary = runner.run()
            wall = time.perf_counter() - t0
    finally:
        close(client)
    failed = int((summary["status"] != "completed").sum())
    if failed:
        raise RuntimeError(f"benchmark campaign: {failed} fits did not complete")
    return {"wall_seconds": wall, "fits_per_hour": 3600 * spec.campaign.replicas / wall}


def bench_campaign(kind: str, method: str, replicas: int, steps: int, workers: list[int]) -> dict[str, Any]:
    """Campaign wall time and fits per hour on each worker count (see the module docstring)."""
    spec = campaign_spec(kind, method, replicas, steps)
    out: dict[str, Any] = {
        "what": "campaign",
        "problem": kind,
        "method": method,
        "replicas": replicas,
        "steps": steps if method == "gan" else 0,
    }
    for n in workers:
        for key, value in _one(spec, n).items():
            out[f"{key}_{n}w"] = value
    lo, hi = min(workers), max(workers)
    if hi > lo:
        out[f"fits_per_hour_ratio_{hi}w_{lo}w"] = out[f"fits_per_hour_{hi}w"] / out[f"fits_per_hour_{lo}w"]
    return out
