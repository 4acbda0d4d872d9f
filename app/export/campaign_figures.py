"""Static (matplotlib, no pyplot) figures of a closure campaign's summary, for :mod:`qcf_studio.app.export.campaign`.

The same panels as the dashboard's Campaign tab (:mod:`qcf_studio.layouts.campaign`): pulls against what a calibrated
method gives (N(0, 1), or Student's t for errors from few bootstrap members), coverage against the nominal level,
R_bv with its interval, ξ_1σ(x) per QCF; and a text page with the verdicts.
Names from the file are shown as plain text (``$`` escaped, so mathtext never parses them).
"""

from __future__ import annotations

import textwrap

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from qcf_studio.app.export.figures import FIGSIZE, text_table
from qcf_studio.engine.campaign.stats import ONE_SIGMA, expected_coverage, expected_pull_pdf
from qcf_studio.engine.campaign.summary import R_BV_RANGE
from qcf_studio.layouts.campaign import (
    NOMINAL_LEVELS,
    PULL_EDGES,
    binomial_band,
    error_dofs,
    plotted_fits,
    reference,
    verdict_table,
    xi_curve,
)

__all__ = ["campaign_figures", "CAMPAIGN_CAPTIONS", "verdict_page", "campaign_title", "plain"]

CAMPAIGN_CAPTIONS = {
    "pulls": "Pulls (estimate − truth)/error of every completed fit per parameter (the error on the truth's side "
    "where a likelihood fit quotes MINOS's asymmetric interval; pulls beyond ±4 in the outer bins), one histogram "
    "per method, against what a calibrated method gives scaled to its number of fits "
    "(dashed): N(0, 1), or Student's t with n − 1 degrees of freedom for errors from n bootstrap members.",
    "coverage": "Observed fraction of fits whose Gaussian interval at each nominal level covers the truth, per "
    "parameter; dashed: the diagonal; dash-dotted: what a calibrated method covers (below the diagonal for "
    "errors from few bootstrap members, Student's t); grey: where the observed coverage of a calibrated method "
    "falls with 95% probability for this number of fits (binomial around that expectation).",
    "r_bv": "Bias–variance ratio R_bv = sqrt(mean (estimate − truth)² / mean error²) per parameter and method with "
    "its 95% bootstrap interval; 1 when the errors are right, the band [0.8, 1.25] is the closure criterion.",
    "xi_1sigma": "ξ_1σ(x): fraction of fits whose QCF lies within 1σ of the truth at x (core range only), per "
    "method; dashed: 0.683, dotted: each method's expectation (lower for errors from few bootstrap members). "
    "2D QCFs are averaged over y.",
}


def plain(text: object, limit: int = 80) -> str:
    """Text from a file for a matplotlib label: clipped, its ``$`` escaped (no mathtext)."""
    s = str(text)
    return (s if len(s) <= limit else s[: limit - 3] + "...").replace("$", r"\$")


def _color(i: int) -> str:
    return f"C{i % 10}"


def _axes_grid(n: int, max_cols: int = 3, height: float = 3.0) -> tuple[Figure, list]:
    cols = max(1, min(n, max_cols))
    rows = -(-max(n, 1) // cols)
    fig = Figure(figsize=(max(FIGSIZE[0], 3.3 * cols), height * rows + 0.4), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _pulls(ds: xr.Dataset) -> Figure:
    params, methods = [str(p) for p in ds["param"].values], [str(m) for m in ds["method"].values]
    fig, axes = _axes_grid(len(params))
    width = PULL_EDGES[1] - PULL_EDGES[0]
    x = np.linspace(PULL_EDGES[0], PULL_EDGES[-1], 161)
    for ax, p in zip(axes, params):
        for i, m in enumerate(methods):
            pulls = ds["pull"].sel({"method": m, "param": p}).values.astype(float)
            pulls = pulls[np.isfinite(pulls)]
            dofs = error_dofs(ds, m)
            ax.hist(
                np.clip(pulls, PULL_EDGES[0] + 1e-9, PULL_EDGES[-1] - 1e-9),
                PULL_EDGES,
                color=_color(i),
                alpha=0.45,
                label=f"{plain(m)} ({pulls.size} fits) vs {reference(dofs)}",
            )
            ax.plot(x, pulls.size * width * expected_pull_pdf(x, dofs), color=_color(i), ls="--", lw=1.2)
        ax.set_title(plain(p), fontsize=10)
        ax.set_xlabel("pull")
        ax.set_ylabel("fits")
        ax.legend(fontsize=7, frameon=False)
    return fig


def _coverage(ds: xr.Dataset) -> Figure:
    methods, params = [str(m) for m in ds["method"].values], [str(p) for p in ds["param"].values]
    fig, axes = _axes_grid(len(methods), max_cols=2, height=3.6)
    levels = ds["level"].values.astype(float)
    for ax, m in zip(axes, methods):
        n = int(ds["n_fits"].sel({"method": m}))
        dofs = error_dofs(ds, m)
        expected = expected_coverage(NOMINAL_LEVELS, dofs)
        lo, hi = binomial_band(n, expected)
        ax.fill_between(
            NOMINAL_LEVELS, lo, hi, color="0.6", alpha=0.35, lw=0, label=f"95% range, calibrated ({n} fits)"
        )
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=1)
        ax.plot(NOMINAL_LEVELS, expected, color="0.35", ls="-.", lw=1.2, label=f"calibrated, pulls {reference(dofs)}")
        for j, p in enumerate(params):
            ax.plot(
                levels,
                ds["coverage"].sel({"method": m, "param": p}).values,
                "o-",
                ms=3,
                color=_color(j),
                label=plain(p),
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"coverage · {plain(m)}", fontsize=10)
        ax.set_xlabel("nominal level")
        ax.set_ylabel("observed coverage")
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    return fig


def _r_bv(ds: xr.Dataset) -> Figure:
    params, methods = [str(p) for p in ds["param"].values], [str(m) for m in ds["method"].values]
    fig = Figure(figsize=(max(FIGSIZE[0], 0.6 * len(params) + 2), FIGSIZE[1]), layout="constrained")
    ax = fig.subplots()
    ax.axhspan(*R_BV_RANGE, color="#3cb44b", alpha=0.15, lw=0, label=f"[{R_BV_RANGE[0]}, {R_BV_RANGE[1]}]")
    ax.axhline(1.0, color="black", lw=0.8)
    pos = np.arange(len(params), dtype=float)
    for i, m in enumerate(methods):
        r = ds["r_bv"].sel({"method": m}).values.astype(float)
        iv = ds["r_bv_interval"].sel({"method": m}).values.astype(float)
        with np.errstate(invalid="ignore"):
            err = np.stack([np.maximum(r - iv[:, 0], 0), np.maximum(iv[:, 1] - r, 0)])
        ax.errorbar(
            pos + (i - (len(methods) - 1) / 2) * 0.2,
            r,
            yerr=np.nan_to_num(err),
            fmt="o",
            capsize=3,
            color=_color(i),
            label=plain(m),
        )
    ax.set_xticks(pos, [plain(p, 20) for p in params], rotation=45 if len(params) > 8 else 0)
    ax.set_xlabel("parameter")
    ax.set_ylabel(r"$R_{bv}$")
    ax.legend(fontsize=8, frameon=False)
    return fig


def _xi(ds: xr.Dataset) -> Figure:
    qcfs, methods = [str(q) for q in ds["qcf"].values], [str(m) for m in ds["method"].values]
    fig, axes = _axes_grid(len(qcfs))
    x = ds["x"].values.astype(float)
    two_d = ds["qcf_xi_1sigma"].ndim == 4
    for ax, q in zip(axes, qcfs):
        ax.axhline(ONE_SIGMA, color="black", ls="--", lw=0.8)
        for i, m in enumerate(methods):
            ax.axhline(float(expected_coverage(ONE_SIGMA, error_dofs(ds, m))), color=_color(i), ls=":", lw=0.8)
            ax.plot(x, xi_curve(ds, m, q), color=_color(i), label=plain(m))
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{plain(q)}" + (" (mean over y)" if two_d else ""), fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel(r"$\xi_{1\sigma}$")
        ax.legend(fontsize=7, frameon=False)
    return fig


def campaign_figures(ds: xr.Dataset) -> dict[str, Figure]:
    """The campaign's figures by name (:data:`CAMPAIGN_CAPTIONS`)."""
    return {"pulls": _pulls(ds), "coverage": _coverage(ds), "r_bv": _r_bv(ds), "xi_1sigma": _xi(ds)}


def campaign_title(ds: xr.Dataset) -> str:
    """``Closure campaign <name> · <problem> · <method> <n> fits, ...`` (raw text from the file, clipped)."""
    fits = plotted_fits(ds)
    return (
        f"Closure campaign {str(ds.attrs.get('name', '?'))[:64]} · {str(ds.attrs.get('problem', '?'))[:40]} · "
        + ", ".join(f"{m[:20]} {n} fits" for m, n in fits.items())
    )


def verdict_page(ds: xr.Dataset) -> Figure:
    """The verdicts and criteria as one A4 page of text and a table."""
    fig = Figure(figsize=(8.27, 11.69))
    left, y = 0.07, 0.95
    fig.text(left, y, plain(campaign_title(ds), 200), fontsize=13, weight="bold", va="top")
    y -= 0.04
    for m in ds["method"].values:
        line = plain(ds.attrs.get(f"criterion_{m}", ""), 300)
        wrapped = textwrap.wrap(f"{plain(m)}: {line}", 110)
        fig.text(left, y, "\n".join(wrapped), fontsize=9, va="top", linespacing=1.35)
        y -= 0.018 * len(wrapped) + 0.01
    table = verdict_table(ds)
    cols = [
        "method",
        "param",
        "fits",
        "r_bv",
        "r_bv_interval",
        "coverage_1sigma",
        "coverage_interval",
        "pull_mean",
        "pull_width",
        "verdict",
    ]
    rows = [[plain(v, 24) for v in row] for row in table[cols].astype(str).values.tolist()]
    height = min(y - 0.04, 0.022 * (len(rows) + 1))
    labels = [c.replace("_", " ").replace("coverage", "cov.") for c in cols]
    text_table(fig, (left, y - height - 0.01, 1 - 2 * left, height), labels, rows, 7)
    return fig
