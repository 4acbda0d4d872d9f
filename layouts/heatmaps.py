"""Heat maps of 2D QCFs (predicted | true | predicted/true) with their x- and y-projections, and of the
2D observables (measured vs generated histograms per data set).

:func:`qcf_heatmaps` takes plain arrays, so it serves a live snapshot as well as a finished run
(:func:`results_heatmaps`). Arrays are indexed ``[x, y]`` like the results Dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import holoviews as hv
import numpy as np
import torch
import xarray as xr

from qcf_studio.engine.problems import Problem
from qcf_studio.engine.results import estimate
from qcf_studio.layouts.live import LivePlots

__all__ = [
    "RATIO_RANGE",
    "TRUTH_FLOOR",
    "ratio_map",
    "qcf_heatmaps",
    "results_heatmaps",
    "observable_heatmaps",
    "true_qcfs_2d",
    "live_heatmaps",
]

RATIO_RANGE = (0.5, 1.5)  # colour range of predicted/true: a diverging map centred on 1, clipped beyond
TRUTH_FLOOR = 1e-3  # the ratio is masked where |truth| is below this fraction of its maximum (0/0 in the tails)
DENSITY_CMAP = "viridis"
RATIO_CMAP = "RdBu_r"
PANEL_SIZE = {"width": 300, "height": 260}


def ratio_map(pred: np.ndarray, truth: np.ndarray, floor: float = TRUTH_FLOOR) -> np.ndarray:
    """``pred / truth``, NaN where ``|truth|`` is below ``floor`` times its maximum."""
    pred, truth = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    keep = np.abs(truth) >= floor * np.nanmax(np.abs(truth))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(keep, pred / truth, np.nan)


def _mesh(x: np.ndarray, y: np.ndarray, values: np.ndarray, vdim: str, title: str) -> hv.QuadMesh:
    # QuadMesh takes z as (len(y), len(x)); ours are indexed [x, y]. QuadMesh also copes with uneven grids.
    return hv.QuadMesh((x, y, np.asarray(values).T), ["x", "y"], vdim).opts(
        title=title, tools=["hover"], colorbar=True, **PANEL_SIZE
    )


def _projection(
    axis: str, grid: np.ndarray, mean: np.ndarray, err: np.ndarray | None, truth: np.ndarray | None, name: str
) -> hv.Overlay:
    label = f"∫ {name} d{'y' if axis == 'x' else 'x'}"
    items: list[hv.Element] = []
    if err is not None:
        items.append(
            hv.Area((grid, mean - err, mean + err), axis, ["lo", "hi"], label="±1σ").opts(
                alpha=0.3, color="#1f77b4", line_alpha=0
            )
        )
    items.append(hv.Curve((grid, mean), axis, "projection", label="predicted").opts(color="#1f77b4"))
    if truth is not None:
        items.append(hv.Curve((grid, truth), axis, "projection", label="truth").opts(color="black", line_dash="dashed"))
    return hv.Overlay(items).opts(title=f"{label} vs {axis}", ylabel=label, legend_position="top_right", **PANEL_SIZE)


def qcf_heatmaps(
    x: np.ndarray,
    y: np.ndarray,
    pred_mean: np.ndarray,
    pred_err: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    name: str = "rho",
    clip: tuple[float, float] = RATIO_RANGE,
    floor: float = TRUTH_FLOOR,
) -> list[hv.Element | hv.Overlay]:
    """One 2D QCF: predicted, true and predicted/true maps, then its x- and y-projections with ±1σ bands.

    The projections' errors are ∫ σ dy (or dx): σ taken fully correlated along the integrated axis, an
    upper bound. Without a truth only the predicted map and the projections are returned.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    pred = np.asarray(pred_mean, dtype=float)
    err = None if pred_err is None else np.asarray(pred_err, dtype=float)
    true = None if truth is None else np.asarray(truth, dtype=float)
    top = np.nanmax(true if true is not None else pred) if np.isfinite(true if true is not None else pred).any() else 0
    density_range = (0.0, float(top) if top > 0 else 1.0)
    items: list[hv.Element | hv.Overlay] = [
        _mesh(x, y, pred, name, f"{name} predicted").opts(cmap=DENSITY_CMAP, clim=density_range)
    ]
    if true is not None:
        items.append(_mesh(x, y, true, name, f"{name} true").opts(cmap=DENSITY_CMAP, clim=density_range))
        items.append(
            _mesh(x, y, ratio_map(pred, true, floor), "ratio", f"{name} predicted / true").opts(
                cmap=RATIO_CMAP, clim=clip, clipping_colors={"NaN": "#eeeeee"}
            )
        )

    def integrate(a: np.ndarray | None, axis: int) -> np.ndarray | None:
        return None if a is None else np.trapezoid(a, y if axis == 1 else x, axis=axis)

    items.append(_projection("x", x, integrate(pred, 1), integrate(err, 1), integrate(true, 1), name))
    items.append(_projection("y", y, integrate(pred, 0), integrate(err, 0), integrate(true, 0), name))
    return items


def _rows(rows: Sequence[list[hv.Element | hv.Overlay]]) -> hv.Layout:
    ncols = max(len(r) for r in rows)
    return hv.Layout([item for r in rows for item in r]).cols(ncols).opts(shared_axes=False)


def results_heatmaps(ds: xr.Dataset, clip: tuple[float, float] = RATIO_RANGE) -> hv.Layout:
    """Heat maps of every 2D QCF of a results Dataset (ensemble mean and error), one row per QCF."""
    if "y" not in ds["qcf_pred"].dims:
        raise ValueError(f"run {ds.attrs.get('name', '?')!r} has 1D QCFs: heat maps need (x, y)")
    mean, err = estimate(ds, "qcf")
    rows = []
    for q in ds["qcf"].values:
        truth = ds["qcf_true"].sel(qcf=q).values if "qcf_true" in ds else None
        rows.append(
            qcf_heatmaps(
                ds["x"].values,
                ds["y"].values,
                mean.sel(qcf=q).values,
                err.sel(qcf=q).values,
                truth,
                name=str(q),
                clip=clip,
            )
        )
    return _rows(rows)


def _hist_mesh(
    ex: np.ndarray, ey: np.ndarray, values: np.ndarray, title: str, clim: tuple[float, float]
) -> hv.QuadMesh:
    return hv.QuadMesh((ex, ey, values.T), ["x", "y"], "density").opts(
        title=title, cmap=DENSITY_CMAP, clim=clim, tools=["hover"], colorbar=True, **PANEL_SIZE
    )


def observable_heatmaps(ds: xr.Dataset) -> hv.Layout:
    """Per data set (observable): the measured and the generated (mean over members) 2D histograms."""
    if "bin_y" not in ds["hist_data"].dims:
        raise ValueError(f"run {ds.attrs.get('name', '?')!r} has 1D observables: heat maps need (bin, bin_y)")
    gen = ds["hist_gen"].mean("member")
    rows = []
    for o in ds["observable"].values:
        ex = ds["bin_edges"].sel(observable=o, coord="x").values
        ey = ds["bin_edges"].sel(observable=o, coord="y").values
        data = ds["hist_data"].sel(observable=o).values
        clim = (0.0, float(np.nanmax(data)))
        rows.append(
            [
                _hist_mesh(ex, ey, data, f"{o}: data", clim),
                _hist_mesh(ex, ey, gen.sel(observable=o).values, f"{o}: generated", clim),
            ]
        )
    return _rows(rows)


def true_qcfs_2d(problem: Problem, truth: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, q)``: the true 2D QCFs ``q (Q, X, Y)`` on the problem's reporting grid."""
    x, y = problem.qcf_grids()
    q = problem.qcfs(torch.tensor([list(truth)], dtype=torch.float64), x, y)[0]
    return x.numpy(), y.numpy(), q.numpy()


def live_heatmaps(
    plots: LivePlots,
    x: np.ndarray,
    y: np.ndarray,
    truth: np.ndarray | None = None,
    clip: tuple[float, float] = RATIO_RANGE,
) -> list[list[hv.DynamicMap]]:
    """Live heat maps on :attr:`LivePlots.snapshot`: per QCF a row of DynamicMaps (predicted | true | ratio |
    x-projection | y-projection) of the ensemble estimate over the members' snapshots: the mean of their
    ``qcf2d_mean`` and the error ``√(mean σ² + var of the means)`` from their ``qcf2d_std`` (the projections'
    ±1σ bands, as for finished runs). ``truth`` is ``(Q, X, Y)`` (see :func:`true_qcfs_2d`) or ``None``.
    """
    shape = (len(x), len(y))

    def estimate(data: dict, qi: int) -> tuple[np.ndarray, np.ndarray | None]:
        snaps = [s for s in ((data or {}).get("members") or {}).values() if "qcf2d_mean" in s]
        if not snaps:
            return np.zeros(shape), None  # before the first snapshot: same elements, empty maps
        means = np.array([np.asarray(s["qcf2d_mean"])[qi] for s in snaps])
        if not all("qcf2d_std" in s for s in snaps):
            return means.mean(0), None
        var = np.mean([np.asarray(s["qcf2d_std"])[qi] ** 2 for s in snaps], axis=0)
        if len(snaps) > 1:
            var = var + means.var(0, ddof=1)
        return means.mean(0), np.sqrt(var)

    def cell(qi: int, name: str, k: int) -> hv.DynamicMap:
        def plot(data: dict) -> hv.Element | hv.Overlay:
            true = None if truth is None else np.asarray(truth)[qi]
            mean, err = estimate(data, qi)
            return qcf_heatmaps(x, y, mean, err, true, name=name, clip=clip)[k]

        return hv.DynamicMap(plot, streams=[plots.snapshot])

    n = 5 if truth is not None else 3
    return [[cell(qi, name, k) for k in range(n)] for qi, name in enumerate(plots.qcf_names)]
