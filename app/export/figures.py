"""Static (matplotlib) figures of one run for ``qcf-studio export``: QCFs, parameters, training, observables.

Every figure is a :class:`matplotlib.figure.Figure` made without pyplot, so no global state and no GUI
backend is involved (PNG through Agg, SVG and PDF through their own backends). No Panel here.
"""

from __future__ import annotations

import re

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from qcf_studio.app.export.report import core_range
from qcf_studio.engine.data.marginals import histogram_marginal_x, qcf_marginal_x
from qcf_studio.engine.results import ERROR_RATIO_LIMIT, QCF_FLOOR, ensemble_estimate, estimate, is_bootstrap

__all__ = ["figures", "FIGSIZE", "CAPTIONS", "text_table"]

FIGSIZE = (7.0, 4.5)  # inches: one column of a two-column page at full width, or a slide
TRUTH = {"color": "black", "ls": "--", "lw": 1.3}
ENSEMBLE = "C0"
MLE = "C3"

CAPTIONS = {
    "qcfs": "Extracted QCFs: ensemble mean with ±1σ band, each member's mean (thin) and the truth (dashed); "
    "below, the ratio to the truth (or the relative error when no truth is known). 2D QCFs are shown "
    "as x-projections ∫dy (band: ∫σ dy, errors taken as fully correlated along y).",
    "qcf_maps": "2D QCFs: ensemble mean, truth and their ratio.",
    "parameters": "Parameter pulls (ensemble mean − truth)/error with the ±1σ and ±2σ bands; the maximum-likelihood "
    "fit as a second marker, and the ratio of the ensemble error to the likelihood error.",
    "training": "Training history per member: generator and discriminator losses and the discriminator's accuracy "
    "on measured and generated events (0.5: it cannot tell them apart).",
    "likelihood": "Negative log-likelihood per iteration of the maximum-likelihood fit.",
    "observables": "Measured (black) and generated (per member) normalised histograms of each observable "
    "(x-marginals in 2D), with χ²/ndf; below, generated/measured.",
}


def _sym(name: str) -> str:
    """A QCF or observable name as mathtext: rho → ρ, sigma1 → σ₁."""
    m = re.fullmatch(r"(rho|sigma|mu|nu|tau)(\d*)", name)
    if m:
        return rf"\{m.group(1)}" + (f"_{{{m.group(2)}}}" if m.group(2) else "")
    return name.replace("_", r"\_")


def _member_color(i: int) -> str:
    return f"C{(i % 9) + 1}"  # C0 is the ensemble's colour


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return -(-n // cols), cols


def _with_ratio_panels(n: int) -> tuple[Figure, list[tuple[Axes, Axes]]]:
    """A figure of ``n`` panels on a grid, each with a ratio panel below it sharing its x axis."""
    rows, cols = _grid(n)
    fig = Figure(figsize=(max(FIGSIZE[0], 3.4 * cols), FIGSIZE[1] * rows), layout="constrained")
    gs = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows)
    axes = []
    for k in range(n):
        r, c = divmod(k, cols)
        ax = fig.add_subplot(gs[2 * r, c])
        axes.append((ax, fig.add_subplot(gs[2 * r + 1, c], sharex=ax)))
    return fig, axes


def _finite_span(values: np.ndarray, centre: float, floor: float, cap: float) -> float:
    v = values[np.isfinite(values)]
    return min(cap, max(floor, 1.1 * float(np.abs(v - centre).max()))) if v.size else cap


def _fig_qcfs(ds: xr.Dataset) -> Figure:
    two_d = "y" in ds["qcf_pred"].dims
    pred, std = qcf_marginal_x(ds["qcf_pred"]), qcf_marginal_x(ds["qcf_pred_std"])
    mean, err = ensemble_estimate(pred, std, is_bootstrap(ds))
    truth = qcf_marginal_x(ds["qcf_true"]) if "qcf_true" in ds else None
    x = ds["x"].values
    lo, hi = core_range(ds)
    names = [str(q) for q in ds["qcf"].values]
    fig, axes = _with_ratio_panels(len(names))
    for q, (ax, axr) in zip(names, axes):
        m, e = mean.sel(qcf=q).values, err.sel(qcf=q).values
        for i, member in enumerate(pred["member"].values):
            ax.plot(
                x, pred.sel(member=member, qcf=q), color=_member_color(i), lw=0.8, alpha=0.8, label=f"member {member}"
            )
        ax.fill_between(x, m - e, m + e, color=ENSEMBLE, alpha=0.3, lw=0, label="ensemble ±1σ")
        ax.plot(x, m, color=ENSEMBLE, lw=1.6, label="ensemble mean")
        label = rf"$\int {_sym(q)}(x,y)\,dy$" if two_d else rf"${_sym(q)}(x)$"
        if truth is not None:
            t = truth.sel(qcf=q).values
            ax.plot(x, t, **TRUTH, label="truth")
            with np.errstate(divide="ignore", invalid="ignore"):
                ok = np.abs(t) >= QCF_FLOOR * np.abs(t).max()
                ratio, band = np.where(ok, m / t, np.nan), np.where(ok, e / np.abs(t), np.nan)
            axr.fill_between(x, ratio - band, ratio + band, color=ENSEMBLE, alpha=0.3, lw=0)
            axr.plot(x, ratio, color=ENSEMBLE, lw=1.4)
            axr.axhline(1.0, **TRUTH)
            core = (x >= lo) & (x <= hi)
            span = _finite_span(np.concatenate([(ratio - band)[core], (ratio + band)[core]]), 1.0, 0.05, 1.0)
            axr.set_ylim(1 - span, 1 + span)
            axr.set_ylabel("pred / true")
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(np.abs(m) > 0, e / np.abs(m), np.nan)
            axr.plot(x, rel, color=ENSEMBLE, lw=1.4)
            axr.set_ylim(0, _finite_span(rel, 0.0, 0.05, 1.0))
            axr.set_ylabel(r"$\sigma / q$")
        if lo > x.min() or hi < x.max():  # grey out what closure does not judge
            for a in (ax, axr):
                a.axvspan(x.min(), lo, color="0.9", lw=0)
                a.axvspan(hi, x.max(), color="0.9", lw=0)
        ax.set_ylabel(label)
        ax.set_title(q)
        ax.tick_params(labelbottom=False)
        axr.set_xlabel("$x$")
        axr.set_xlim(x.min(), x.max())
        ax.legend(fontsize=7, frameon=False)
    return fig


def _fig_qcf_maps(ds: xr.Dataset) -> Figure:
    mean, err = estimate(ds, "qcf")
    x, y = ds["x"].values, ds["y"].values
    names = [str(q) for q in ds["qcf"].values]
    has_truth = "qcf_true" in ds
    fig = Figure(figsize=(10.5, 3.2 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 3 if has_truth else 2, squeeze=False, sharex=True, sharey=True)
    for k, q in enumerate(names):
        m = mean.sel(qcf=q).transpose("x", "y").values
        panels = [(m, rf"ensemble mean ${_sym(q)}(x,y)$", "viridis", None, None)]
        if has_truth:
            t = ds["qcf_true"].sel(qcf=q).transpose("x", "y").values
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(np.abs(t) >= QCF_FLOOR * np.abs(t).max(), m / t, np.nan)
            span = _finite_span(ratio, 1.0, 0.05, 1.0)
            vmax = max(np.nanmax(m), np.nanmax(t))
            panels[0] = (m, panels[0][1], "viridis", 0.0, vmax)
            panels += [
                (t, rf"truth ${_sym(q)}(x,y)$", "viridis", 0.0, vmax),
                (ratio, "mean / truth", "RdBu_r", 1 - span, 1 + span),
            ]
        else:
            e = err.sel(qcf=q).transpose("x", "y").values
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(np.abs(m) > 0, e / np.abs(m), np.nan)
            panels.append((rel, r"relative error $\sigma/\rho$", "magma", 0.0, _finite_span(rel, 0.0, 0.05, 1.0)))
        for ax, (z, title, cmap, vmin, vmax) in zip(axes[k], panels):
            mesh = ax.pcolormesh(x, y, z.T, shading="auto", cmap=cmap, vmin=vmin, vmax=vmax, rasterized=True)
            fig.colorbar(mesh, ax=ax)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("$x$")
            ax.set_ylabel("$y$")
            ax.set_aspect("equal")
    return fig


def _fig_parameters(ds: xr.Dataset) -> Figure:
    names = [str(p) for p in ds["param"].values]
    mean, err = estimate(ds, "params")
    mle = "params_mle" in ds and "params_mle_err" in ds
    pos = np.arange(len(names))
    if "params_true" in ds:
        ratio = mle and ds.attrs.get("method") != "mle"
        fig = Figure(
            figsize=(max(FIGSIZE[0], 0.45 * len(names) + 2), FIGSIZE[1] + (1.5 if ratio else 0)), layout="constrained"
        )
        axes = fig.subplots(
            2 if ratio else 1, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1.3] if ratio else [1]}
        )[:, 0]
        ax = axes[0]
        ax.axhspan(-2, 2, color="#f5d90a", alpha=0.45, lw=0, label="±2σ")
        ax.axhspan(-1, 1, color="#3cb44b", alpha=0.45, lw=0, label="±1σ")
        ax.axhline(0, color="black", lw=0.8)
        pull = (mean - ds["params_true"]) / err
        shift = 0.15 if mle else 0.0
        ax.errorbar(
            pos - shift,
            pull,
            yerr=1.0,
            fmt="o",
            color=ENSEMBLE,
            capsize=3,
            label="ensemble (GAN)" if ds.attrs.get("method") != "mle" else "maximum likelihood",
        )
        if mle:
            mpull = (ds["params_mle"] - ds["params_true"]) / ds["params_mle_err"]
            ax.errorbar(pos + shift, mpull, yerr=1.0, fmt="s", color=MLE, capsize=3, label="maximum likelihood")
        top = max(3.5, float(np.nanmax(np.abs(pull))) + 1.2)
        ax.set_ylim(-top, top)
        ax.set_ylabel(r"pull $(\hat\theta - \theta_{\mathrm{true}})/\sigma$")
        ax.legend(fontsize=8, ncols=4, loc="upper center", frameon=False)
        if ratio:
            axr = axes[1]
            axr.bar(pos, err / ds["params_mle_err"], color=ENSEMBLE, width=0.5)
            axr.axhline(ERROR_RATIO_LIMIT, color=MLE, ls="--", lw=1, label=f"limit {ERROR_RATIO_LIMIT:g}")
            axr.axhline(1.0, color="black", lw=0.8, ls=":")
            axr.set_yscale("log")  # ratios span 0.1-100; plain numbers, not 6×10⁰
            axr.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axr.yaxis.set_minor_formatter(NullFormatter())
            axr.set_ylabel(r"$\sigma_{\mathrm{GAN}}/\sigma_{\mathrm{MLE}}$")
            axr.legend(fontsize=8, frameon=False)
        axes[-1].set_xticks(pos, names, rotation=45 if len(names) > 8 else 0)
        axes[-1].set_xlabel("parameter")
        return fig
    # No truth: each parameter's estimate in its own units.
    rows, cols = _grid(len(names), max_cols=5)
    fig = Figure(figsize=(FIGSIZE[0], 1.9 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, names):
        ax.errorbar(
            [0],
            [float(mean.sel(param=p))],
            yerr=[float(err.sel(param=p))],
            fmt="o",
            color=ENSEMBLE,
            capsize=3,
            label="ensemble",
        )
        members = ds["params_pred"].sel(param=p).values
        ax.plot(np.linspace(-0.2, 0.2, members.size), members, "x", color="0.4", ms=4, label="members")
        if mle:
            ax.errorbar(
                [0.5],
                [float(ds["params_mle"].sel(param=p))],
                yerr=[float(ds["params_mle_err"].sel(param=p))],
                fmt="s",
                color=MLE,
                capsize=3,
                label="max. likelihood",
            )
        ax.set_xlim(-0.6, 1.1 if mle else 0.6)
        ax.set_xticks([])
        ax.set_title(p, fontsize=10)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("parameter estimates (no truth known)")
    return fig


_TRAINING = (
    ("loss_g", "generator loss"),
    ("loss_d", "discriminator loss"),
    ("d_acc_real", "D accuracy on data"),
    ("d_acc_fake", "D accuracy on generated"),
)


def _fig_training(ds: xr.Dataset) -> Figure:
    present = [(v, label) for v, label in _TRAINING if v in ds]
    rows, cols = _grid(len(present), max_cols=2)
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    step = ds["step"].values
    for ax, (v, label) in zip(axes, present):
        for i, member in enumerate(ds["member"].values):
            y = ds[v].sel(member=member).values
            ok = np.isfinite(y)
            ax.plot(step[ok], y[ok], color=_member_color(i), lw=1.0, label=f"member {member}")
        if v.startswith("d_acc"):
            ax.axhline(0.5, color="black", ls=":", lw=0.8)
            ax.set_ylim(0, 1)
        ax.set_ylabel(label)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    for ax in axes[-cols:]:
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7, frameon=False)
    return fig


def _fig_likelihood(ds: xr.Dataset) -> Figure:
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.subplots()
    step = ds["step"].values
    for i, member in enumerate(ds["member"].values):
        y = ds["nll"].sel(member=member).values
        ok = np.isfinite(y)
        ax.plot(step[ok], y[ok], "o-", color=_member_color(i), ms=3, lw=1.0, label=f"member {member}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"$-\ln L$")
    ax.legend(fontsize=8, frameon=False)
    return fig


def _fig_observables(ds: xr.Dataset) -> Figure:
    names = [str(o) for o in ds["observable"].values]
    two_d = "bin_y" in ds["hist_data"].dims
    data_x, gen_x = (histogram_marginal_x(ds[v], ds["bin_edges"]) for v in ("hist_data", "hist_gen"))
    fig, axes = _with_ratio_panels(len(names))
    for o, (ax, axr) in zip(names, axes):
        edges = ds["bin_edges"].sel(observable=o).values
        xe = edges[0] if two_d else edges
        data = data_x.sel(observable=o).values
        ax.stairs(data, xe, color="0.85", fill=True)
        ax.stairs(data, xe, color="black", lw=1.4, fill=False, label="measured")
        for i, member in enumerate(ds["member"].values):
            gen = gen_x.sel(member=member, observable=o).values
            label = f"member {member}"
            if "chi2_ndf" in ds:
                label += rf", $\chi^2$/ndf {float(ds['chi2_ndf'].sel(member=member, observable=o)):.2f}"
            ax.stairs(gen, xe, color=_member_color(i), lw=1.0, label=label)
            with np.errstate(divide="ignore", invalid="ignore"):
                axr.stairs(np.where(data > 0, gen / data, np.nan), xe, color=_member_color(i), lw=1.0, baseline=None)
        axr.axhline(1.0, color="black", lw=0.8)
        axr.set_ylim(0.5, 1.5)
        ax.set_title(rf"${_sym(o)}$" + (" (x-marginal)" if two_d else ""))
        ax.set_ylabel(r"$\frac{1}{N}\,\frac{dN}{dx}$")
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize=7, frameon=False)
        axr.set_ylabel("gen / data")
        axr.set_xlabel("$x$")
    return fig


def figures(ds: xr.Dataset) -> dict[str, Figure]:
    """The run's figures by name: ``qcfs``, ``qcf_maps`` (2D), ``parameters``, ``training`` (GAN) or
    ``likelihood`` (MLE), ``observables`` (see :data:`CAPTIONS`)."""
    out = {"qcfs": _fig_qcfs(ds)}
    if "y" in ds["qcf_pred"].dims:
        out["qcf_maps"] = _fig_qcf_maps(ds)
    out["parameters"] = _fig_parameters(ds)
    if any(v in ds for v, _ in _TRAINING):
        out["training"] = _fig_training(ds)
    elif "nll" in ds:
        out["likelihood"] = _fig_likelihood(ds)
    if "hist_data" in ds and "hist_gen" in ds:
        out["observables"] = _fig_observables(ds)
    return out


def text_table(
    fig: Figure, rect: tuple[float, float, float, float], labels: list[str], rows: list[list[str]], fontsize: float
) -> None:
    """A table of text on ``fig`` in ``rect`` (left, bottom, width, height in figure fractions): a bold header
    row of ``labels``, columns as wide as their longest entry, thin rules; nothing but the frame when no rows."""
    ax = fig.add_axes(rect)
    ax.axis("off")
    if not rows:
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) + 2 for i, c in enumerate(labels)]
    table = ax.table(
        cellText=rows,
        colLabels=labels,
        loc="upper center",
        cellLoc="center",
        bbox=(0, 0, 1, 1),
        colWidths=[w / sum(widths) for w in widths],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(fontsize)
    for (r, _), cell in table.get_celld().items():
        cell.set_linewidth(0.4)
        if r == 0:
            cell.set_text_props(weight="bold")
