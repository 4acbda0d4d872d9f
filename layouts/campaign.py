"""HoloViews plots of a closure campaign's summary (:mod:`qcf_studio.engine.campaign.summary`), and its tables.

Each factory takes the summary Dataset and draws one panel from small arrays (a histogram of pulls, a few
curves), so redrawing while fits finish is cheap; :func:`campaign_plots` wraps them in DynamicMaps fed by
one :class:`holoviews.streams.Pipe`, so a new summary updates the glyphs' data in place.

- pulls: per parameter, the histogram of (estimate − truth) / error of every method's completed fits (the error on
  the truth's side where the fit quotes an asymmetric MINOS interval)
  (counts; pulls beyond ±4 in the outer bins) against what a calibrated method gives, scaled to each
  method's number of fits: N(0, 1), or Student's t where the errors come from few bootstrap members
  (:func:`reference`);
- coverage: per method, the observed fraction of fits whose Gaussian interval at each nominal level covers
  the truth, one curve per parameter, the diagonal, what a calibrated method covers (the diagonal unless its
  errors come from few bootstrap members), and a grey band where the observed coverage of a calibrated
  method falls with 95% probability for the method's number of fits (binomial, around that expectation;
  the per-point Clopper–Pearson intervals are ``coverage_interval``, in the tables);
- R_bv: per parameter and method with its 95% bootstrap interval, a line at 1 and the band [0.8, 1.25];
- ξ_1σ(x): per QCF and method, the fraction of fits whose QCF lies within 1σ of the truth at x (core range
  only), a line at 0.683 and one at each method's expected 1σ coverage; 2D QCFs are shown averaged over y
  (the mean over the y values with a value).
"""

from __future__ import annotations

import json
import warnings

import holoviews as hv
import numpy as np
import pandas as pd
import xarray as xr
from scipy.stats import binom

from qcf_studio.engine.campaign.stats import ONE_SIGMA, expected_coverage, expected_pull_pdf
from qcf_studio.engine.campaign.summary import R_BV_RANGE
from qcf_studio.layouts.live import COLORS

__all__ = [
    "PULL_EDGES",
    "NOMINAL_LEVELS",
    "binomial_band",
    "error_dofs",
    "reference",
    "pull_histogram",
    "coverage_plot",
    "r_bv_plot",
    "xi_plot",
    "xi_curve",
    "campaign_plots",
    "plotted_fits",
    "verdict_table",
    "fits_table",
]

PULL_EDGES = np.linspace(-4.0, 4.0, 17)
NOMINAL_LEVELS = np.linspace(0.0, 1.0, 101)
HEIGHT = 280
# Every panel keeps its own axes: HoloViews would otherwise link all axes named alike on the page (x of the ξ
# panels with each other and with the Live tab's QCF panels).
_PANEL = {"responsive": True, "height": HEIGHT, "shared_axes": False}


def _names(ds: xr.Dataset, dim: str) -> list[str]:
    return [str(v) for v in ds[dim].values]


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def error_dofs(ds: xr.Dataset, method: str) -> np.ndarray:
    """Degrees of freedom of each of a method's errors (``error_dof``: n − 1 for n bootstrap members, inf where
    the error is known, NaN for fits not done); ``[inf]`` for a summary without them."""
    if "error_dof" not in ds or ds["error_dof"].dims != ("method", "replica"):
        return np.array([np.inf])
    return ds["error_dof"].sel({"method": method}).values.astype(float)


def reference(dofs: np.ndarray) -> str:
    """The pulls' distribution for a calibrated method with errors of ``dofs`` in words: ``N(0,1)``, ``t(3)``
    (errors from 4 bootstrap members) or ``t(2–3)``."""
    d = dofs[~np.isnan(dofs) & (dofs > 0)]
    if d.size == 0 or np.all(np.isinf(d)):
        return "N(0,1)"
    lo, hi = float(d.min()), float(d.max())
    return f"t({lo:g})" if lo == hi else f"t({lo:g}–{hi:g})"


def plotted_fits(ds: xr.Dataset) -> dict[str, int]:
    """Completed fits per method in ``ds`` (what the plots show)."""
    return {m: int(n) for m, n in zip(_names(ds, "method"), ds["n_fits"].values)}


def pull_histogram(ds: xr.Dataset, param: str) -> hv.Overlay:
    """Histogram of one parameter's pulls per method (counts, vdim ``fits``) against n·Δ·(N(0, 1) or the
    Student's t of the method's errors)."""
    width = PULL_EDGES[1] - PULL_EDGES[0]
    x = np.linspace(PULL_EDGES[0], PULL_EDGES[-1], 161)
    items = []
    for i, m in enumerate(_names(ds, "method")):
        pulls = ds["pull"].sel({"method": m, "param": param}).values.astype(float)
        pulls = pulls[np.isfinite(pulls)]
        counts, _ = np.histogram(np.clip(pulls, PULL_EDGES[0] + 1e-9, PULL_EDGES[-1] - 1e-9), PULL_EDGES)
        items.append(
            hv.Histogram((PULL_EDGES, counts), kdims=["pull"], vdims=["fits"], label=m).opts(
                color=_color(i), alpha=0.45, line_color=_color(i), framewise=True
            )
        )
        dofs = error_dofs(ds, m)
        items.append(
            hv.Curve(
                (x, pulls.size * width * expected_pull_pdf(x, dofs)), "pull", "fits", label=f"{m}: {reference(dofs)}"
            ).opts(color=_color(i), line_dash="dashed", framewise=True)
        )
    return hv.Overlay(items).opts(
        title=f"pulls of {param}",
        xlabel="pull (estimate − truth) / error",
        ylabel="fits",
        **_PANEL,
        legend_position="top_right",
        framewise=True,
    )


def binomial_band(n: int, expected: np.ndarray = NOMINAL_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Central 95% range of k/n for k ~ Binomial(n, p), at every ``expected`` coverage p (by default the
    levels of :data:`NOMINAL_LEVELS` themselves)."""
    if n <= 0:
        return expected, expected
    return binom.ppf(0.025, n, expected) / n, binom.ppf(0.975, n, expected) / n


def coverage_plot(ds: xr.Dataset, method: str) -> hv.Overlay:
    """Observed vs nominal coverage of one method, a curve per parameter, the diagonal, a calibrated method's
    expectation and the binomial band around it."""
    n = int(ds["n_fits"].sel({"method": method}))
    dofs = error_dofs(ds, method)
    expected = expected_coverage(NOMINAL_LEVELS, dofs)
    lo, hi = binomial_band(n, expected)
    items: list[hv.Element] = [
        hv.Area((NOMINAL_LEVELS, lo, hi), "nominal", ["observed", "observed_hi"], label="95% range if calibrated").opts(
            color="gray", alpha=0.25, line_alpha=0
        ),
        hv.Curve((NOMINAL_LEVELS, NOMINAL_LEVELS), "nominal", "observed", label="observed = nominal").opts(
            color="black", line_dash="dashed", line_width=1
        ),
        hv.Curve((NOMINAL_LEVELS, expected), "nominal", "observed", label=f"calibrated, pulls {reference(dofs)}").opts(
            color="gray", line_dash="dotdash", line_width=1.5
        ),
    ]
    levels = ds["level"].values.astype(float)
    for j, p in enumerate(_names(ds, "param")):
        y = ds["coverage"].sel({"method": method, "param": p}).values.astype(float)
        items.append(hv.Curve((levels, y), "nominal", "observed", label=p).opts(color=_color(j)))
        items.append(hv.Scatter((levels, y), "nominal", "observed").opts(color=_color(j), size=5))
    # Fixed ranges, no framewise anywhere: HoloViews fails to update an overlay that mixes framewise layers with
    # an Area (KeyError on the Area's second value dimension).
    return hv.Overlay(items).opts(
        title=f"coverage · {method} ({n} fits)",
        xlabel="nominal level",
        ylabel="observed coverage",
        xlim=(0, 1),
        ylim=(0, 1.02),
        **_PANEL,
        legend_position="bottom_right",
    )


def r_bv_plot(ds: xr.Dataset) -> hv.Overlay:
    """R_bv per parameter (x) and method (colour, side by side) with its interval; 1 and [0.8, 1.25] marked."""
    params, methods = _names(ds, "param"), _names(ds, "method")
    pos = np.arange(len(params), dtype=float)
    items: list[hv.Element] = [
        hv.HSpan(*R_BV_RANGE).opts(color="#3cb44b", alpha=0.15, framewise=True),
        hv.HLine(1.0).opts(color="black", line_width=1, framewise=True),
        hv.HLine(R_BV_RANGE[0]).opts(color="#3cb44b", line_dash="dashed", line_width=1, framewise=True),
        hv.HLine(R_BV_RANGE[1]).opts(color="#3cb44b", line_dash="dashed", line_width=1, framewise=True),
    ]
    for i, m in enumerate(methods):
        x = pos + (i - (len(methods) - 1) / 2) * 0.2
        r = ds["r_bv"].sel({"method": m}).values.astype(float)
        iv = ds["r_bv_interval"].sel({"method": m}).values.astype(float)
        with np.errstate(invalid="ignore"):
            neg, plus = np.maximum(r - iv[:, 0], 0), np.maximum(iv[:, 1] - r, 0)
        items.append(
            hv.ErrorBars((x, r, neg, plus), "param_position", ["r_bv", "neg", "pos"]).opts(
                color=_color(i), framewise=True
            )
        )
        items.append(
            hv.Scatter((x, r), "param_position", "r_bv", label=m).opts(color=_color(i), size=8, framewise=True)
        )
    return hv.Overlay(items).opts(
        title="R_bv = sqrt(mean (estimate − truth)² / mean error²)",
        xlabel="parameter",
        ylabel="R_bv",
        xticks=list(zip(pos, params)),
        xlim=(-0.6, len(params) - 0.4),
        **_PANEL,
        legend_position="top_right",
        framewise=True,
    )


def xi_curve(ds: xr.Dataset, method: str, qcf: str) -> np.ndarray:
    """ξ_1σ(x) of one method and QCF; 2D QCFs averaged over y (finite values only)."""
    xi = ds["qcf_xi_1sigma"].sel({"method": method, "qcf": qcf}).values.astype(float)
    if xi.ndim == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # x where no y has a value: NaN
            xi = np.nanmean(xi, axis=1)
    return xi


def xi_plot(ds: xr.Dataset, qcf: str) -> hv.Overlay:
    """ξ_1σ(x) of one QCF per method, with the line at 0.683 and one at each method's expected 1σ coverage."""
    x = ds["x"].values.astype(float)
    two_d = ds["qcf_xi_1sigma"].ndim == 4
    items: list[hv.Element] = [
        hv.HLine(ONE_SIGMA).opts(color="black", line_dash="dashed", line_width=1, framewise=True)
    ]
    for i, m in enumerate(_names(ds, "method")):
        level = float(expected_coverage(ONE_SIGMA, error_dofs(ds, m)))
        items.append(hv.HLine(level).opts(color=_color(i), line_dash="dotted", line_width=1, framewise=True))
    curves = [xi_curve(ds, m, qcf) for m in _names(ds, "method")]
    judged = np.any([np.isfinite(c) for c in curves], axis=0)  # the core range: no value outside it
    if judged.any():
        keep = slice(int(np.argmax(judged)), len(judged) - int(np.argmax(judged[::-1])))
        x, curves = x[keep], [c[keep] for c in curves]
    for i, (m, c) in enumerate(zip(_names(ds, "method"), curves)):
        items.append(hv.Curve((x, c), "x", "xi_1sigma", label=m).opts(color=_color(i), framewise=True))
    return hv.Overlay(items).opts(
        title=f"ξ_1σ of {qcf}" + (" (mean over y)" if two_d else ""),
        xlabel="x",
        ylabel="ξ_1σ",
        ylim=(0, 1.02),
        **_PANEL,
        legend_position="bottom_right",
        framewise=True,
    )


def campaign_plots(pipe: hv.streams.Pipe, ds: xr.Dataset) -> dict[str, list[hv.DynamicMap]]:
    """DynamicMaps of every panel for summaries shaped like ``ds`` (same methods, parameters and QCFs),
    redrawn when ``pipe`` receives a new summary: ``pulls``, ``coverage``, ``r_bv``, ``xi``."""

    def dmap(factory, *args: str) -> hv.DynamicMap:  # noqa: ANN001
        return hv.DynamicMap(lambda data: factory(data, *args), streams=[pipe])

    return {
        "pulls": [dmap(pull_histogram, p) for p in _names(ds, "param")],
        "coverage": [dmap(coverage_plot, m) for m in _names(ds, "method")],
        "r_bv": [dmap(r_bv_plot)],
        "xi": [dmap(xi_plot, q) for q in _names(ds, "qcf")],
    }


def _iv(values: np.ndarray) -> str:
    return f"[{values[0]:.2f}, {values[1]:.2f}]" if np.all(np.isfinite(values)) else ""


def verdict_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (method, parameter): R_bv, 1σ coverage and pulls with their 95% intervals, the verdict, and
    how many fits had an error reaching a bound of the parameter's range (``at_bound``, where the summary has it)."""
    try:
        verdicts = json.loads(str(ds.attrs.get("verdicts", "{}")))
    except ValueError:
        verdicts = {}
    rows = []
    for m in _names(ds, "method"):
        for p in _names(ds, "param"):
            sel = {"method": m, "param": p}
            word = verdicts.get(m, {}).get(p, "") if isinstance(verdicts.get(m), dict) else ""
            rows.append(
                {
                    "method": m,
                    "param": p,
                    "verdict": str(word)[:40],
                    "fits": int(ds["n_fits"].sel({"method": m})),
                    "r_bv": float(ds["r_bv"].sel(sel)),
                    "r_bv_interval": _iv(ds["r_bv_interval"].sel(sel).values),
                    "coverage_1sigma": float(ds["coverage_1sigma"].sel(sel)),
                    "coverage_interval": _iv(ds["coverage_1sigma_interval"].sel(sel).values),
                    "pull_mean": float(ds["pull_mean"].sel(sel)),
                    "pull_mean_interval": _iv(ds["pull_mean_interval"].sel(sel).values),
                    "pull_width": float(ds["pull_width"].sel(sel)),
                    "pull_width_interval": _iv(ds["pull_width_interval"].sel(sel).values),
                    # fits whose error reaches a bound of the range (summaries written before it: not known)
                    **({"at_bound": int(ds["at_bound"].sel(sel).sum())} if "at_bound" in ds else {}),
                }
            )
    return pd.DataFrame(rows).round(3)


def fits_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per fit (method, replica): status, wall seconds and the largest |pull| over the parameters."""
    pull = np.abs(ds["pull"].transpose("method", "replica", "param").values.astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fits not done: all NaN
        pull_max = np.nanmax(pull, axis=2) if pull.shape[2] else np.full(pull.shape[:2], np.nan)
    status = ds["status"].transpose("method", "replica").values
    wall = ds["wall_seconds"].transpose("method", "replica").values.astype(float)
    rows = [
        {
            "method": m,
            "replica": int(r),
            "status": str(status[i, j])[:20],
            "wall_seconds": round(float(wall[i, j]), 2),
            "pull_max": round(float(pull_max[i, j]), 3),
        }
        for j, r in enumerate(ds["replica"].values)
        for i, m in enumerate(_names(ds, "method"))
    ]
    return pd.DataFrame(rows, columns=["method", "replica", "status", "wall_seconds", "pull_max"])
