"""Several runs of one problem side by side: their extracted QCFs with bands against the truth, ratio panels,
and a table of parameters with pulls and the GAN/MLE error ratio.

2D QCFs are compared through their x-projections (∫ dy; errors taken fully correlated along y).
"""

from __future__ import annotations

from collections.abc import Mapping

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr

from engine.results import estimate
from layouts.live import COLORS
from layouts.results import project_x

__all__ = ["check_comparable", "compare_qcfs", "parameter_table"]


def check_comparable(datasets: Mapping[str, xr.Dataset]) -> str:
    """The problem all runs share; ``ValueError`` naming the runs of each problem when they differ."""
    if not datasets:
        raise ValueError("no runs to compare")
    by_problem: dict[str, list[str]] = {}
    for label, ds in datasets.items():
        by_problem.setdefault(str(ds.attrs.get("problem", "?")), []).append(label)
    if len(by_problem) > 1:
        parts = "; ".join(f"{p}: {', '.join(labels)}" for p, labels in by_problem.items())
        raise ValueError(f"runs of different problems cannot be overlaid ({parts})")
    return next(iter(by_problem))


def _qcf_estimate(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Ensemble mean and error of the QCFs along x (2D: x-projections, σ integrated as fully correlated)."""
    mean, err = estimate(ds, "qcf")
    return project_x(mean), project_x(err)


def _on(x: np.ndarray, x_ref: np.ndarray, values: np.ndarray) -> np.ndarray:
    return values if np.array_equal(x, x_ref) else np.interp(x, x_ref, values)


def compare_qcfs(datasets: Mapping[str, xr.Dataset], height: int = 320) -> list[hv.Layout]:
    """Per QCF: every run's ensemble mean with its ±1σ band and the truth (dashed black) when known, above a
    ratio panel (run / truth, or run / the first run when no run knows the truth) sharing the x axis.

    ``datasets`` maps a label (shown in the legend) to a results Dataset; all must be of one problem.
    """
    check_comparable(datasets)
    estimates = {label: _qcf_estimate(ds) for label, ds in datasets.items()}
    with_truth = [ds for ds in datasets.values() if "qcf_true" in ds]
    truth = project_x(with_truth[0]["qcf_true"]) if with_truth else None
    first_label = next(iter(datasets))
    ref_name = "truth" if truth is not None else first_label
    ref = truth if truth is not None else estimates[first_label][0]
    two_d = "y" in datasets[first_label]["qcf_pred"].dims
    out = []
    for q in datasets[first_label]["qcf"].values:
        q = str(q)
        ylabel = f"∫ {q} dy" if two_d else f"{q}(x)"
        ref_x, ref_q = ref["x"].values, ref.sel(qcf=q).values
        main: list[hv.Element] = []
        ratio: list[hv.Element] = []
        for i, (label, (mean, err)) in enumerate(estimates.items()):
            color = COLORS[i % len(COLORS)]
            x, m, e = mean["x"].values, mean.sel(qcf=q).values, err.sel(qcf=q).values
            main.append(hv.Area((x, m - e, m + e), "x", ["lo", "hi"], label=f"{label} ±1σ").opts(
                color=color, alpha=0.25, line_alpha=0))
            main.append(hv.Curve((x, m), "x", "qcf", label=label).opts(color=color))
            r = _on(x, ref_x, ref_q)
            with np.errstate(divide="ignore", invalid="ignore"):
                keep = np.abs(r) > 1e-3 * np.nanmax(np.abs(r))  # 0/0 in the tails says nothing
                lo, hi, mid = (np.where(keep, v / r, np.nan) for v in (m - e, m + e, m))
            ratio.append(hv.Area((x, lo, hi), "x", ["ratio_lo", "ratio_hi"]).opts(color=color, alpha=0.25,
                                                                                 line_alpha=0))
            ratio.append(hv.Curve((x, mid), "x", "ratio").opts(color=color))
        if truth is not None:
            main.append(hv.Curve((truth["x"].values, truth.sel(qcf=q).values), "x", "qcf", label="truth").opts(
                color="black", line_dash="dashed"))
        ratio.append(hv.HLine(1.0).opts(color="black", line_dash="dashed"))
        top = hv.Overlay(main).opts(title=f"{q}: {', '.join(estimates)}", ylabel=ylabel, height=height,
                                    responsive=True, legend_position="top_right", xaxis=None)
        bottom = hv.Overlay(ratio).opts(ylabel=f"ratio to {ref_name}", height=max(height // 2, 120),
                                        responsive=True, show_legend=False)
        out.append(hv.Layout([top, bottom]).cols(1))
    return out


def _values(ds: xr.Dataset, name: str) -> np.ndarray:
    return ds[name].values if name in ds else np.full(ds.sizes["param"], np.nan)


def parameter_table(datasets: Mapping[str, xr.Dataset]) -> pd.DataFrame:
    """One row per (run, parameter): truth, ensemble estimate and error, pull, MLE reference and error ratio.

    Stored closure variables are used where the run has them; runs without a truth get the ensemble
    estimate and NaN pulls. Columns absent from a run are NaN.
    """
    frames = []
    for label, ds in datasets.items():
        if "params_ensemble" in ds:
            est, err = ds["params_ensemble"].values, ds["params_ensemble_err"].values
        else:
            mean, sigma = estimate(ds, "params")
            est, err = mean.values, sigma.values
        frames.append(pd.DataFrame({
            "run": label,
            "method": str(ds.attrs.get("method", "")),
            "param": [str(p) for p in ds["param"].values],
            "truth": _values(ds, "params_true"),
            "estimate": est.astype(float),
            "error": err.astype(float),
            "pull": _values(ds, "pull"),
            "mle_estimate": _values(ds, "params_mle"),
            "mle_error": _values(ds, "params_mle_err"),
            "error_ratio": _values(ds, "error_ratio"),
        }))
    columns = ["run", "method", "param", "truth", "estimate", "error", "pull", "mle_estimate", "mle_error",
               "error_ratio"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
