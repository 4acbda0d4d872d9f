"""A GAN ensemble's error interval that reaches a bound of the parameter's range: where the members' spread may
stop being an error.

The generator maps onto ``[lo, hi]`` through a sigmoid, so a member whose data pull a parameter past a bound sits
just inside it. When the data put a parameter within an error or two of its bound, members pile up there and their
spread, the run's error, is cut off by the bound. multiset2d's campaign (docs/campaigns.md) showed it on B_p4
(truth 0.3, bound 0, likelihood error 0.25): bootstrap errors of 0.01–0.05 and pulls of −5 to −26 on the replicas
whose members sat at 0. The likelihood fit meets the same case with MINOS's one-sided interval; a spread cannot.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from qcf_studio.engine.results import estimate
from qcf_studio.engine.safe_yaml import load_yaml

__all__ = ["EDGE", "REACH", "errors_at_bound", "spec_bounds"]

REACH = 2.0  # an estimate within this many of its errors from a bound has an interval the bound cuts
EDGE = 0.01  # a member within this fraction of the range from a bound is at it (the sigmoid saturates there)


def spec_bounds(ds: xr.Dataset) -> dict[str, tuple[float, float]]:
    """The parameters' ranges from the run's spec (``problem.bounds``); ``{}`` when the spec cannot be read."""
    try:
        raw = load_yaml(str(ds.attrs.get("spec", "")))["problem"]["bounds"]
        out = {str(k): (float(v[0]), float(v[1])) for k, v in raw.items()}
    except Exception:  # noqa: BLE001 (a file from someone else: no bounds, nothing judged)
        return {}
    return {k: v for k, v in out.items() if np.isfinite(v).all() and v[1] > v[0]}


def errors_at_bound(ds: xr.Dataset) -> dict[str, tuple[float, float, float]]:
    """The parameters of a GAN run whose estimate lies within :data:`REACH` errors of a bound of their range, or
    with a member at it (within :data:`EDGE` of the range: members pressed against a bound agree to a small
    fraction of the error they would have): name → (that bound, estimate, error). Empty for a likelihood fit
    (MINUIT reports its own) or without bounds."""
    if ds.attrs.get("method") != "gan" or "params_pred" not in ds or "params_pred_std" not in ds:
        return {}
    bounds = spec_bounds(ds)
    mean, err = estimate(ds, "params")
    pred = ds["params_pred"].transpose("member", "param").values
    out: dict[str, tuple[float, float, float]] = {}
    for i, name in enumerate(str(p) for p in ds["param"].values):
        m, e = float(mean.values[i]), float(err.values[i])
        if name not in bounds or not (np.isfinite(m) and np.isfinite(e)):
            continue
        lo, hi = bounds[name]
        nearest = lo if m - lo <= hi - m else hi
        members = pred[:, i][np.isfinite(pred[:, i])]
        pressed = bool((np.abs(members - nearest) <= EDGE * (hi - lo)).any())
        if pressed or abs(m - nearest) < REACH * e:
            out[name] = (nearest, m, e)
    return out
