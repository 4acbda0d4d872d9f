"""Several runs of one problem side by side: their extracted QCFs with bands against the truth, ratio panels,
and a table of parameters with pulls and the GAN/MLE error ratio (shown rounded to what each error supports).

2D QCFs are compared through their x-projections (∫ dy; errors taken fully correlated along y).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr

from qcf_studio.engine.data.marginals import qcf_marginal_x
from qcf_studio.engine.results import estimate
from qcf_studio.layouts.live import COLORS, SIDE_LEGEND
from qcf_studio.layouts.ranges import padded_range

__all__ = ["check_comparable", "compare_qcfs", "parameter_table", "parameter_display", "round_to_error"]


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
    return qcf_marginal_x(mean), qcf_marginal_x(err)


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
    truth = qcf_marginal_x(with_truth[0]["qcf_true"]) if with_truth else None
    first_label = next(iter(datasets))
    ref_name = "truth" if truth is not None else first_label
    ref = truth if truth is not None else estimates[first_label][0]
    two_d = "y" in datasets[first_label]["qcf_pred"].dims
    out = []
    for q in datasets[first_label]["qcf"].values:
        q = str(q)
        # Its own dimension per QCF: Panel links the axes of panes sharing one, and u(x) took d(x)'s range.
        value = hv.Dimension(f"qcf_{q}", label=f"∫ {q} dy" if two_d else f"{q}(x)")
        ref_x, ref_q = ref["x"].values, ref.sel(qcf=q).values
        main: list[hv.Element] = []
        ratio: list[hv.Element] = []
        shown = []
        for i, (label, (mean, err)) in enumerate(estimates.items()):
            color = COLORS[i % len(COLORS)]
            x, m, e = mean["x"].values, mean.sel(qcf=q).values, err.sel(qcf=q).values
            shown += [m - e, m + e]
            main.append(
                hv.Area((x, m - e, m + e), "x", [value, f"qcf_{q}_hi"], label=f"{label} ±1σ").opts(
                    color=color, alpha=0.25, line_alpha=0
                )
            )
            main.append(hv.Curve((x, m), "x", value, label=label).opts(color=color))
            r = _on(x, ref_x, ref_q)
            with np.errstate(divide="ignore", invalid="ignore"):
                keep = np.abs(r) > 1e-3 * np.nanmax(np.abs(r))  # 0/0 in the tails says nothing
                lo, hi, mid = (np.where(keep, v / r, np.nan) for v in (m - e, m + e, m))
            ratio.append(
                hv.Area((x, lo, hi), "x", ["ratio_lo", "ratio_hi"]).opts(color=color, alpha=0.25, line_alpha=0)
            )
            ratio.append(hv.Curve((x, mid), "x", "ratio").opts(color=color))
        if truth is not None:
            shown.append(truth.sel(qcf=q).values)
            main.append(
                hv.Curve((truth["x"].values, truth.sel(qcf=q).values), "x", value, label="truth").opts(
                    color="black", line_dash="dashed"
                )
            )
        ratio.append(hv.HLine(1.0).opts(color="black", line_dash="dashed"))
        top = hv.Overlay(main).opts(
            title=f"{q}: {', '.join(estimates)}",
            height=height,
            responsive=True,
            ylim=padded_range(*shown),
            xaxis=None,
            **SIDE_LEGEND,
        )
        bottom = hv.Overlay(ratio).opts(
            ylabel=f"ratio to {ref_name}", height=max(height // 2, 120), responsive=True, show_legend=False
        )
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
        frames.append(
            pd.DataFrame(
                {
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
                }
            )
        )
    columns = [
        "run",
        "method",
        "param",
        "truth",
        "estimate",
        "error",
        "pull",
        "mle_estimate",
        "mle_error",
        "error_ratio",
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


DISPLAY_COLUMNS = {  # column -> the column holding its error (rounded alike), "" for those shown as they are
    "truth": "",
    "estimate": "error",
    "error": "error",
    "pull": "",
    "mle_estimate": "mle_error",
    "mle_error": "mle_error",
    "error_ratio": "",
}


def round_to_error(value: float, error: float, digits: int = 2) -> str:
    """``value`` written to the decimal place of the ``digits``-th significant digit of ``error``
    (``round_to_error(2.18749, 0.0523) == "2.187"``); 4 significant digits without a usable error; ``""`` for NaN.
    """
    if not math.isfinite(value):
        return ""
    if not (math.isfinite(error) and error > 0):
        return f"{value:.4g}"
    decimals = digits - 1 - math.floor(math.log10(error))
    return f"{round(value, decimals) + 0.0:.{max(decimals, 0)}f}"  # + 0.0: no "-0.000"


def parameter_display(table: pd.DataFrame) -> pd.DataFrame:
    """The :func:`parameter_table` as read on screen: estimates and errors rounded to two significant digits of
    the error, the truth to 6 significant digits, pulls to 0.01 and error ratios to 2 significant digits, missing
    values blank; a column no run has a value in is left out."""
    shown = table.dropna(axis="columns", how="all").copy()
    for column, error in DISPLAY_COLUMNS.items():
        if column not in shown:
            continue
        values = table[column].to_numpy(dtype=float)
        if error:
            errors = table[error].to_numpy(dtype=float)
            shown[column] = [round_to_error(v, e) for v, e in zip(values, errors)]
        elif column == "truth":
            shown[column] = ["" if not math.isfinite(v) else f"{v:.6g}" for v in values]
        elif column == "pull":
            shown[column] = ["" if not math.isfinite(v) else f"{round(v, 2) + 0.0:.2f}" for v in values]
        else:
            shown[column] = [round_to_error(v, abs(v)) for v in values]
    return shown
