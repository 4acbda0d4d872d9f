"""Results of a run as an xarray Dataset (the results contract), closure metrics, atomic NetCDF I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from typing import cast

import numpy as np
import torch
import xarray as xr

from qcf_studio.engine.data.histograms import data_histograms
from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.gan.trainer import MemberResult
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results.contract import STATUSES, ResultsContractError, attribute_number, check_results
from qcf_studio.engine.results.fit_quality import fit_quality
from qcf_studio.engine.spec import Spec

__all__ = [
    "ERROR_RATIO_LIMIT",
    "PULL_LIMIT",
    "QCF_FLOOR",
    "QCF_SIGMA_LIMIT",
    "STATUSES",
    "ResultsContractError",
    "attribute_number",
    "build_results",
    "check_results",
    "closure_metrics",
    "closure_summary",
    "closure_variables",
    "ensemble_estimate",
    "estimate",
    "error_dof",
    "fitted_members",
    "is_bootstrap",
    "qcf_deviation",
    "qcf_grids",
    "package_versions",
]

_PACKAGES = ("torch", "iminuit", "numpy", "xarray", "h5netcdf", "dask", "distributed", "panel", "holoviews", "bokeh")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _overall_status(members: Sequence[MemberResult]) -> str:
    statuses = {m.status for m in members}
    if "failed" in statuses:
        return "failed"
    return "stopped" if "stopped" in statuses else "completed"


def build_results(
    spec: Spec,
    data: MeasuredData,
    members: Sequence[MemberResult],
    wall_seconds: float,
    reference: MemberResult | None = None,
) -> xr.Dataset:
    """Assemble member results into the contract's Dataset (see design.md, "Results").

    ``reference`` is an optional maximum-likelihood fit of the same data: its parameters and
    HESSE errors are stored as ``params_mle``/``params_mle_err`` and give the GAN/MLE error ratio. MINUIT's
    summary of a likelihood fit (validity, EDM, calls, parameters at a bound, MINOS errors) is stored as
    :mod:`qcf_studio.engine.results.fit_quality` describes.
    """
    problem = get_problem(spec.problem.kind)
    grids = qcf_grids(spec)
    two_d = problem.event_dims == 2
    members = sorted(members, key=lambda m: m.member)
    steps = sorted({s for m in members for s in m.metrics.get("step", [])})
    step_index = {s: i for i, s in enumerate(steps)}
    metric_names = ["loss_g", "loss_d", "d_acc_real", "d_acc_fake", "loss_xsec", "loss_d_xsec", "nll"]
    metric_names = [n for n in metric_names if any(n in m.metrics for m in members)]
    metric_arrays = {n: np.full((len(members), len(steps)), np.nan) for n in metric_names}
    for i, m in enumerate(members):
        for n in metric_names:
            for s, v in zip(m.metrics.get("step", []), m.metrics.get(n, [])):
                metric_arrays[n][i, step_index[s]] = v

    edges, hist_data = data_histograms(data)  # (O, D, bins + 1), (O, bins[, bins])
    qdims = ("qcf", "x", "y") if two_d else ("qcf", "x")
    hdims = ("observable", "bin", "bin_y") if two_d else ("observable", "bin")
    coords = {
        "member": [m.member for m in members],
        "step": np.asarray(steps, dtype=np.int64),
        "param": list(problem.param_names),
        "qcf": list(problem.qcf_names),
        "x": grids[0],
        "observable": list(problem.observable_names),
        "bin": np.arange(edges.shape[-1] - 1),
    }
    if two_d:
        coords.update({"y": grids[1], "bin_y": np.arange(edges.shape[-1] - 1), "coord": ["x", "y"]})
    ds = xr.Dataset(coords=coords)
    for n, arr in metric_arrays.items():
        ds[n] = (("member", "step"), arr)
    # The generator's parameter means as training went (what the live view plots), where they were reported.
    history = np.full((len(members), len(steps), len(problem.param_names)), np.nan)
    for i, m in enumerate(members):
        for j, name in enumerate(problem.param_names):
            for s, v in zip(m.metrics.get("step", []), m.metrics.get(f"param_{name}", [])):
                history[i, step_index[s], j] = v
    if np.isfinite(history).any():
        ds["params_history"] = (("member", "step", "param"), history)
        ds["params_history"].attrs["description"] = "mean of the generator's parameters at each reported step"
    ds["params_pred"] = (("member", "param"), np.stack([m.params_pred for m in members]))
    ds["params_pred_std"] = (("member", "param"), np.stack([m.params_pred_std for m in members]))
    draws = [m.params_draws for m in members if m.params_draws is not None]  # none from a member that failed
    if len(draws) == len(members) and all(d.shape == draws[0].shape for d in draws):
        ds["params_draws"] = (("member", "draw", "param"), np.stack(draws))
        ds["params_draws"].attrs["description"] = (
            "draws of each member's parameter distribution (the generator's; "
            "a likelihood fit's N(θ̂, H⁻¹)), for SBC ranks"
        )
    ds["qcf_pred"] = (("member", *qdims), np.stack([m.qcf_pred for m in members]))
    ds["qcf_pred_std"] = (("member", *qdims), np.stack([m.qcf_pred_std for m in members]))
    ds["hist_data"] = (hdims, hist_data)
    ds["hist_gen"] = (("member", *hdims), np.stack([m.hist_gen for m in members]))
    ds["chi2_ndf"] = (("member", "observable"), np.stack([m.chi2_ndf for m in members]))
    ds["chi2_ndf"].attrs["description"] = "χ²/ndf of generated vs measured histograms (shapes)"
    if two_d:
        ds["bin_edges"] = (("observable", "coord", "bin_edge"), edges)
    else:
        ds["bin_edges"] = (("observable", "bin_edge"), edges[:, 0])
    ds["xsec_data"] = (("observable",), data.xsec)
    ds["xsec_data_err"] = (("observable",), data.xsec_err)
    ds["steps_done"] = (("member",), np.asarray([m.steps_done for m in members]))
    ds["resumed_from"] = (("member",), np.asarray([m.resumed_from for m in members]))
    ds["resumed_from"].attrs["description"] = "step a member went on from after its worker died (0: never)"
    if spec.cluster.mode == "data_parallel":
        ds["comm_seconds"] = (("member",), np.asarray([m.comm_seconds for m in members]))
        ds["comm_seconds"].attrs["description"] = "mean time per rank spent in collectives (gradient sharing)"
    if reference is not None:
        ds["params_mle"] = (("param",), reference.params_pred)
        ds["params_mle_err"] = (("param",), reference.params_pred_std)
        ds["params_mle"].attrs["description"] = "unbinned maximum-likelihood fit of the same data (HESSE errors)"
    minuit_variables, minuit_attrs = fit_quality(members, reference, len(problem.param_names))
    ds = ds.assign(minuit_variables)
    if data.truth is not None:
        ds["params_true"] = (("param",), np.asarray(data.truth))
        truth = torch.as_tensor(data.truth, dtype=torch.float64)[None]
        ds["qcf_true"] = (qdims, problem.qcfs(truth, *(torch.as_tensor(g) for g in grids))[0].numpy())

    events = sum(m.events_processed for m in members)
    ds.attrs.update(
        {
            "spec": spec.to_yaml(),
            "name": spec.name,
            "problem": spec.problem.kind,
            "method": spec.training.method,
            "status": _overall_status(members),
            "wall_seconds": float(wall_seconds),
            "events_per_second": float(events / wall_seconds) if wall_seconds > 0 else 0.0,
            "versions": json.dumps(package_versions()),
            "uncertainty": "bootstrap" if spec.ensemble.bootstrap else "generator",
            **minuit_attrs,
        }
    )
    errors = [m.error for m in members if m.error]
    if errors:
        ds.attrs["errors"] = "\n".join(errors)
    if data.truth is not None:
        ds.update(closure_variables(ds))
        ds.attrs.update(closure_metrics(ds, core=problem.core_range))
    return ds


def qcf_grids(spec: Spec) -> tuple[np.ndarray, ...]:
    """Where the spec's QCFs are reported: ``(x,)`` or ``(x, y)``."""
    return tuple(g.numpy() for g in get_problem(spec.problem.kind).qcf_grids())


def ensemble_estimate(
    pred: xr.DataArray, std: xr.DataArray, bootstrap: bool = False
) -> tuple[xr.DataArray, xr.DataArray]:
    """Ensemble mean and standard deviation over ``member`` (failed members, NaN, left out).

    By default ``σ² = mean(σ_m²) + var(mean_m)``: the generator's spread plus the spread between
    members. With ``bootstrap`` (members trained on bootstrap replicas of the data) the error comes from the
    spread ``s`` between the members' estimates alone, while the generator's spread is not calibrated to it
    (docs/design-notes.md, "Bootstrap ensembles"): ``s²`` estimates the variance of one fit to data like these,
    and the mean of ``n`` fits to bootstrap replicas differs from the fit to the data themselves by ``s²/n`` more,
    so ``σ = s · sqrt(1 + 1/n)`` (1.12 s for 4 members).
    """
    ok = pred.notnull().all([d for d in pred.dims if d != "member"])
    pred, std = pred.sel(member=ok), std.sel(member=ok)
    mean = pred.mean("member")
    spread = pred.var("member", ddof=1) if pred.sizes["member"] > 1 else np.nan * mean
    # (numpy's stubs do not know that a ufunc of a DataArray is a DataArray)
    if bootstrap:
        return mean, cast(xr.DataArray, np.sqrt(spread * (1.0 + 1.0 / pred.sizes["member"])))
    var = (std**2).mean("member")
    return mean, cast(xr.DataArray, np.sqrt(var + spread if pred.sizes["member"] > 1 else var))


def is_bootstrap(ds: xr.Dataset) -> bool:
    """Whether the members of a result were trained on bootstrap replicas (``uncertainty`` attribute)."""
    return ds.attrs.get("uncertainty") == "bootstrap"


def fitted_members(ds: xr.Dataset) -> int:
    """Members whose every parameter is finite: the ones :func:`ensemble_estimate` uses (a failed member's are NaN)."""
    pred = ds["params_pred"].transpose("member", ...).values.reshape(ds.sizes["member"], -1)
    return int(np.isfinite(pred).all(axis=1).sum())


def error_dof(ds: xr.Dataset) -> float:
    """Degrees of freedom of a result's parameter errors: n − 1 for n bootstrap members (:func:`fitted_members`),
    ``inf`` for errors that are not estimated from a spread."""
    if not is_bootstrap(ds) or "params_pred" not in ds or "member" not in ds["params_pred"].dims:
        return float("inf")
    return float(fitted_members(ds) - 1)


def estimate(ds: xr.Dataset, what: str) -> tuple[xr.DataArray, xr.DataArray]:
    """:func:`ensemble_estimate` of ``params`` or ``qcf`` of a result, with its kind of errors."""
    return ensemble_estimate(ds[f"{what}_pred"], ds[f"{what}_pred_std"], is_bootstrap(ds))


def closure_variables(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """Per-parameter closure numbers: the ensemble's estimate, error, pull and GAN/MLE error ratio."""
    mean, err = estimate(ds, "params")
    out = {"params_ensemble": mean, "params_ensemble_err": err, "pull": (mean - ds["params_true"]) / err}
    out["pull"].attrs["description"] = "(ensemble mean − truth) / ensemble error"
    if "params_mle_err" in ds:
        out["error_ratio"] = err / ds["params_mle_err"]
        out["error_ratio"].attrs["description"] = "ensemble error / maximum-likelihood (Hessian) error"
    return out


# The closure criteria of design.md: closure_metrics judges by these, the closure report (app.export.report)
# quotes them.
PULL_LIMIT = 3.0  # max |pull| of any parameter (pulls centred on 0 with width ≈ 1)
QCF_SIGMA_LIMIT = 2.0  # ensemble-mean QCF within 2σ of the truth everywhere in the core range
ERROR_RATIO_LIMIT = 1.5  # ensemble error at most 1.5 × the maximum-likelihood (statistical) error
# A QCF is judged only where it is not negligible: |truth| above this fraction of its maximum
# (deviations in units of σ are 0/0 far in the tails of e.g. gauss6's Gaussians).
QCF_FLOOR = 1e-3


def _qcf_judged(ds: xr.Dataset, core: tuple[float, float]) -> xr.DataArray:
    """Where the QCFs of ``ds`` are judged: x within ``core`` and |truth| at least :data:`QCF_FLOOR` of its maximum."""
    truth = ds["qcf_true"]
    spatial = [d for d in truth.dims if d != "qcf"]
    return (ds["x"] >= core[0]) & (ds["x"] <= core[1]) & (abs(truth) >= QCF_FLOOR * abs(truth).max(spatial))


def qcf_deviation(ds: xr.Dataset, core: tuple[float, float]) -> xr.DataArray:
    """|ensemble-mean QCF − truth| / error where the QCFs are judged (x within ``core``, truth not negligible),
    else NaN."""
    mean, err = estimate(ds, "qcf")
    with np.errstate(divide="ignore", invalid="ignore"):
        return (abs(mean - ds["qcf_true"]) / err).where(_qcf_judged(ds, core))


def closure_metrics(ds: xr.Dataset, core: tuple[float, float]) -> dict[str, float | int]:
    """Closure numbers of a result with known truth and :func:`closure_variables` (floats, so they fit in
    NetCDF attributes).

    - pulls of the ensemble-mean parameters (max |pull|, mean and RMS over parameters);
    - the ensemble-mean QCF's deviation from the truth in units of its error over the core range
      (along x; the whole y range in 2D), and its relative deviation;
    - the worst χ²/ndf of generated vs measured histograms over members and observables;
    - the worst GAN/MLE error ratio when a maximum-likelihood reference with errors exists (MINUIT gives none
      where HESSE fails, e.g. with a parameter on its bound; the closure report says so).
    ``closure_passed`` is 1 when max |pull| ≤ :data:`PULL_LIMIT` (3), the QCF lies within :data:`QCF_SIGMA_LIMIT`
    (2σ) everywhere in the core range and (when known) the error ratio is at most :data:`ERROR_RATIO_LIMIT` (1.5).
    """
    pulls, err = ds["pull"], ds["params_ensemble_err"]  # from closure_variables
    dev_sigma = qcf_deviation(ds, core)
    rel = abs(estimate(ds, "qcf")[0] / ds["qcf_true"] - 1.0).where(_qcf_judged(ds, core))
    max_pull = float(np.abs(pulls).max())
    max_dev = float(dev_sigma.max())
    out: dict[str, float | int] = {
        "closure_max_abs_pull": max_pull,
        "closure_pull_mean": float(pulls.mean()),
        "closure_pull_rms": float(np.sqrt((pulls**2).mean())),
        "closure_max_qcf_dev_sigma": max_dev,
        "closure_max_qcf_rel_dev": float(rel.max()),
    }
    if "chi2_ndf" in ds and bool(ds["chi2_ndf"].notnull().any()):
        out["closure_max_chi2_ndf"] = float(ds["chi2_ndf"].max())
    passed = max_pull <= PULL_LIMIT and max_dev <= QCF_SIGMA_LIMIT
    ratios = err / ds["params_mle_err"] if "params_mle_err" in ds else None
    if ratios is not None and bool(ratios.notnull().any()):  # (a reference fit without errors judges nothing)
        ratio = float(ratios.max())
        out["closure_max_error_ratio"] = ratio
        passed = passed and ratio <= ERROR_RATIO_LIMIT
    out["closure_passed"] = int(passed)
    return out


def closure_summary(attrs: dict) -> str:
    """One line on the closure of a result: its verdict and each criterion's number against its limit."""
    verdict = "passed" if attrs["closure_passed"] else "FAILED"
    parts = [
        f"max |pull| {attrs['closure_max_abs_pull']:.2f} (≤ {PULL_LIMIT:g})",
        f"max QCF deviation {attrs['closure_max_qcf_dev_sigma']:.2f} σ (≤ {QCF_SIGMA_LIMIT:g})",
        f"max relative QCF deviation {100 * attrs['closure_max_qcf_rel_dev']:.1f}%",
    ]
    if "closure_max_chi2_ndf" in attrs:
        parts.append(f"max χ²/ndf {attrs['closure_max_chi2_ndf']:.2f}")
    if "closure_max_error_ratio" in attrs:
        parts.append(f"max GAN/MLE error ratio {attrs['closure_max_error_ratio']:.2f} (≤ {ERROR_RATIO_LIMIT:g})")
    return f"closure {verdict}: " + ", ".join(parts)
