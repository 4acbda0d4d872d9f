"""A finished run shown with the live view's plots: its results Dataset replayed into :class:`LivePlots`.

The results file holds the metric history per (member, step) and the final state of each member; these
are pushed through the same streams the live view uses, so a reopened run looks like the run did live
at its last step. Parameter trajectories are not stored: the parameter panel shows each member's final
generator mean at its last step only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from qcf_studio.engine.data.marginals import histogram_marginal_x, qcf_marginal_x
from qcf_studio.engine.problems import Problem, get_problem
from qcf_studio.engine.safe_yaml import load_yaml
from qcf_studio.layouts.live import METRIC_COLUMNS, LivePlots

__all__ = [
    "QcfCurves",
    "true_qcf_projections",
    "qcf_true_from_results",
    "metric_rows",
    "member_snapshots",
    "data_histograms_x",
    "replay",
]

QcfCurves = dict[str, tuple[np.ndarray, np.ndarray]]  # QCF name -> (x, values): what LivePlots.qcfs draws


def true_qcf_projections(problem: Problem, truth: Sequence[float]) -> QcfCurves:
    """The true QCFs on the problem's reporting grid; 2D QCFs projected onto x (∫ dy), as the live view shows."""
    grids = [g.numpy() for g in problem.qcf_grids()]
    q = problem.qcfs(torch.tensor([list(truth)], dtype=torch.float64), *map(torch.as_tensor, grids))[0].numpy()
    qx = qcf_marginal_x(xr.DataArray(q, dims=("qcf", "x", "y")[: q.ndim], coords=dict(zip(("x", "y"), grids))))
    return {n: (grids[0], qx.values[i]) for i, n in enumerate(problem.qcf_names)}


def qcf_true_from_results(ds: xr.Dataset) -> QcfCurves | None:
    """The stored true QCFs (x-projections in 2D), or ``None`` when the truth is unknown."""
    if "qcf_true" not in ds:
        return None
    q = qcf_marginal_x(ds["qcf_true"])
    x = ds["x"].values
    return {str(n): (x, q.sel(qcf=n).values) for n in ds["qcf"].values}


def metric_rows(ds: xr.Dataset, param_names: Sequence[str]) -> list[dict[str, Any]]:
    """The stored metric history as the live view's rows (member = position in the file, 0, 1, …).

    Missing metrics (an MLE fit has no GAN losses, a GAN fit no ``nll``) are NaN; ``param_<name>`` is the stored
    trajectory (``params_history``), or for older files the member's final generator mean at its last step only.
    """
    steps = ds["step"].values
    rows: list[dict[str, Any]] = []
    for i in range(ds.sizes["member"]):
        values = {c: ds[c].isel(member=i).values if c in ds else np.full(len(steps), np.nan) for c in METRIC_COLUMNS}
        reported = np.zeros(len(steps), dtype=bool)
        for v in values.values():
            reported |= np.isfinite(v)
        last = int(np.flatnonzero(reported)[-1]) if reported.any() else -1
        final = ds["params_pred"].isel(member=i).values
        history = ds["params_history"].isel(member=i).values if "params_history" in ds else None
        for j in np.flatnonzero(reported):
            row: dict[str, Any] = {"member": i, "rank": 0, "step": int(steps[j])}
            row.update({c: float(v[j]) for c, v in values.items()})
            if history is not None:  # the stored trajectories
                row.update({f"param_{p}": float(history[j, k]) for k, p in enumerate(param_names)})
            else:  # files written before params_history: the final mean at the last step only
                row.update({f"param_{p}": float(final[k]) if j == last else np.nan for k, p in enumerate(param_names)})
            rows.append(row)
    return rows


def _bin_edges_x(ds: xr.Dataset) -> np.ndarray:
    """Bin edges along x per observable, ``(O, bins + 1)``."""
    edges = ds["bin_edges"]
    return (edges.sel(coord="x") if "coord" in edges.dims else edges).values


def data_histograms_x(ds: xr.Dataset) -> dict[str, tuple[list[float], list[float]]]:
    """The measured data's histograms as the live view takes them: observable -> (x edges, density)."""
    edges, dens = _bin_edges_x(ds), histogram_marginal_x(ds["hist_data"], ds["bin_edges"]).values
    return {str(o): (edges[k].tolist(), dens[k].tolist()) for k, o in enumerate(ds["observable"].values)}


def member_snapshots(ds: xr.Dataset) -> dict[int, dict[str, Any]]:
    """One final snapshot per member in the live format (keys as :meth:`GANTrainer.snapshot`).

    The band is mean ± the generator's standard deviation (live: its 16–84% quantiles). In 2D the
    x-projection's error is ∫ σ dy, i.e. taken fully correlated along y (an upper bound).
    """
    steps_done = ds["steps_done"].values if "steps_done" in ds else None
    out = {}
    for i in range(ds.sizes["member"]):
        mean = ds["qcf_pred"].isel(member=i)
        std = ds["qcf_pred_std"].isel(member=i)
        pm, ps = qcf_marginal_x(mean), qcf_marginal_x(std)
        snap: dict[str, Any] = {
            "step": int(steps_done[i]) if steps_done is not None else int(ds["step"].max()) if ds.sizes["step"] else 0,
            "x": ds["x"].values.tolist(),
            "params_mean": ds["params_pred"].isel(member=i).values.tolist(),
            "params_std": ds["params_pred_std"].isel(member=i).values.tolist(),
            "qcf_mean": pm.values.tolist(),
            "qcf_lo": (pm - ps).values.tolist(),
            "qcf_hi": (pm + ps).values.tolist(),
            "hist_gen": histogram_marginal_x(ds["hist_gen"].isel(member=i), ds["bin_edges"]).values.tolist(),
        }
        if "chi2_ndf" in ds:
            snap["chi2_ndf"] = ds["chi2_ndf"].isel(member=i).values.tolist()
        if "y" in mean.dims:
            snap["y"] = ds["y"].values.tolist()
            snap["qcf2d_mean"] = mean.values.tolist()
            snap["qcf2d_std"] = std.values.tolist()
        out[i] = snap
    return out


def _bounds(ds: xr.Dataset, problem: Problem) -> tuple[list[float], list[float]]:
    """The run's parameter bounds from its frozen spec (the problem's defaults if the spec has none)."""
    lo, hi = list(problem.lo), list(problem.hi)
    try:  # a file from elsewhere may hold anything here: what cannot be read leaves the defaults
        bounds = (load_yaml(ds.attrs["spec"]).get("problem") or {}).get("bounds") or {}
        for k, name in enumerate(problem.param_names):
            pair = bounds.get(name)
            if isinstance(pair, list) and len(pair) == 2:
                lo[k], hi[k] = float(pair[0]), float(pair[1])
    except (ValueError, TypeError, AttributeError):
        return list(problem.lo), list(problem.hi)
    return lo, hi


def replay(ds: xr.Dataset) -> tuple[LivePlots, QcfCurves | None]:
    """A :class:`LivePlots` holding the finished run ``ds`` and its true QCFs for :meth:`LivePlots.qcfs`.

    Lay it out like the live view with :func:`qcf_studio.layouts.page.live_panels`.
    """
    problem = get_problem(str(ds.attrs["problem"]))
    truth = ds["params_true"].values.tolist() if "params_true" in ds else None
    method = "mle" if str(ds.attrs.get("method")) == "mle" else "gan"
    plots = LivePlots(
        problem.param_names,
        problem.qcf_names,
        problem.observable_names,
        truth,
        ds.sizes["member"],
        _bounds(ds, problem),
        method=method,
    )
    plots.push_metrics(metric_rows(ds, problem.param_names))
    plots.push_snapshot(member_snapshots(ds), data_histograms_x(ds))
    return plots, qcf_true_from_results(ds)
