"""A campaign's summary: per-fit estimates and errors, and per method whether its errors are right.

:func:`fit_record` keeps what the summary needs of one fit's results (small arrays, so a campaign of
hundreds of fits fits in memory); :func:`build_summary` turns the records into the campaign contract
(design.md, "Campaigns"):

- ``estimate``, ``error``, ``pull`` (method, replica, param); ``truth`` (replica, param);
  ``error_toward_truth`` (method, replica, param): the error a fit quotes on the truth's side of its estimate,
  MINOS's lower or upper error where the likelihood fit ran MINOS (near a bound), else ``error``; the pulls, the
  coverage and R_bv judge it, so that an asymmetric interval is judged as quoted;
- ``status``, ``wall_seconds`` (method, replica); ``n_fits`` (method): completed fits;
- ``coverage_1sigma``, ``coverage_2sigma`` (method, param) with Clopper–Pearson ``*_interval`` (…, bound);
- ``coverage`` (method, param, level) observed vs nominal Gaussian level, with its interval;
- ``error_dof`` (method, replica): degrees of freedom of each fit's error (``inf`` for a Hessian or a
  generator's spread, n − 1 for n bootstrap members) and ``coverage_expected`` (method, level): what a
  calibrated method covers at each level given them (Student's t; the level itself for known errors);
- ``r_bv`` (method, param) with a bootstrap ``r_bv_interval``; ``pull_mean``, ``pull_width`` with intervals,
  ``pull_ks_pvalue`` against N(0, 1);
- ``qcf_xi_1sigma``, ``qcf_r_bv`` (method, qcf, x[, y]) over the core range (NaN outside it);
- ``sbc_rank`` (method, replica, param) and ``sbc_pvalue`` (method, param) with ``truths: prior``;
- attrs: ``spec``, ``verdicts`` (JSON: method → param → word), ``verdict_<method>`` (a line of words),
  ``criterion_<method>`` (design.md's: R_bv within [0.8, 1.25] and 68% inside the coverage interval; the
  verdicts judge the coverage against ``coverage_expected``, and the criterion says both where they differ).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.stats import norm

from qcf_studio.engine.campaign import stats
from qcf_studio.engine.campaign.plan import CampaignPlan, FitKey, replica_truth
from qcf_studio.engine.data.safe_hdf5 import open_netcdf
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results import (
    QCF_FLOOR,
    ResultsContractError,
    check_results,
    error_dof,
    estimate,
    is_bootstrap,
    package_versions,
    qcf_grids,
)
from qcf_studio.engine.results.bounds import errors_at_bound
from qcf_studio.engine.textlimits import clip, clip_path

__all__ = [
    "FitRecord",
    "fit_record",
    "missing_record",
    "read_fit",
    "build_summary",
    "MAX_FIT_BYTES",
    "COVERAGE_LEVELS",
    "R_BV_RANGE",
    "SUMMARY_VERSION",
]

SUMMARY_VERSION = 1
MAX_FIT_BYTES = 2**30  # a fit's results file, and what its datasets may declare (as app.catalog reads results)
COVERAGE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, stats.ONE_SIGMA, 0.8, 0.9, stats.TWO_SIGMA, 0.99)
R_BV_RANGE = (0.8, 1.25)  # design.md's closure criterion for a method


@dataclass
class FitRecord:
    """What a campaign keeps of one fit. ``status``: completed | failed | stopped | missing."""

    key: FitKey
    status: str
    wall_seconds: float = float("nan")
    estimate: np.ndarray | None = None  # (param,)
    error: np.ndarray | None = None
    truth: np.ndarray | None = None
    qcf_estimate: np.ndarray | None = None  # (qcf, x[, y])
    qcf_error: np.ndarray | None = None
    qcf_truth: np.ndarray | None = None
    draws: np.ndarray | None = None  # (draw, param): bootstrap members' estimates or the fit's parameter draws
    dof: float = float("inf")  # of the error: n − 1 for n bootstrap members, inf where it is known
    at_bound: np.ndarray | None = None  # (param,) bool: the fit's error reaches a bound of the parameter's range
    below: np.ndarray | None = None  # (param,) MINOS's distances of its interval's ends below and above the
    above: np.ndarray | None = None  # estimate (> 0), NaN where MINOS did not run
    path: Path | None = None
    message: str = ""


def fit_record(ds: xr.Dataset, key: FitKey, path: Path | None = None) -> FitRecord:
    """The record of a fit's results ``ds`` (a run with known truth and closure variables)."""
    status = str(ds.attrs.get("status", "failed"))
    record = FitRecord(
        key,
        status,
        float(ds.attrs.get("wall_seconds", np.nan)),
        path=path,
        message=str(ds.attrs.get("errors", ""))[:500],
    )
    record.truth = np.asarray(ds["params_true"], dtype=float)
    if status != "completed":
        return record
    # Recomputed from the members, like the QCFs (not the file's params_ensemble_err): every fit of a campaign,
    # those written by an earlier version included, is judged with today's definition of its errors.
    p_mean, p_err = estimate(ds, "params")
    record.estimate, record.error = np.asarray(p_mean, dtype=float), np.asarray(p_err, dtype=float)
    q_mean, q_err = estimate(ds, "qcf")
    record.qcf_estimate, record.qcf_error = np.asarray(q_mean, dtype=float), np.asarray(q_err, dtype=float)
    record.qcf_truth = np.asarray(ds["qcf_true"], dtype=float)
    record.dof = error_dof(ds)
    record.at_bound = _at_bound(ds)
    if "params_minos_lower" in ds and "params_minos_upper" in ds:  # a likelihood fit (one member)
        record.below = -np.asarray(ds["params_minos_lower"].isel(member=0), dtype=float)
        record.above = np.asarray(ds["params_minos_upper"].isel(member=0), dtype=float)
    if is_bootstrap(ds):
        record.draws = np.asarray(ds["params_pred"], dtype=float)  # (member, param)
    elif "params_draws" in ds:
        record.draws = np.asarray(ds["params_draws"], dtype=float).reshape(-1, ds.sizes["param"])
    return record


def _at_bound(ds: xr.Dataset) -> np.ndarray:
    """Per parameter, whether the fit's error reaches a bound of its range: MINUIT's flag for a likelihood fit
    (any member), :func:`~qcf_studio.engine.results.bounds.errors_at_bound` for a GAN."""
    names = [str(p) for p in ds["param"].values]
    if "params_at_bound" in ds:
        flags = np.asarray(ds["params_at_bound"].transpose("member", "param").values, dtype=float)
        return np.nan_to_num(flags).any(axis=0)
    near = errors_at_bound(ds)
    return np.asarray([n in near for n in names], dtype=bool)


def missing_record(key: FitKey, status: str = "missing", message: str = "") -> FitRecord:
    return FitRecord(key, status, message=message)


def read_fit(path: Path, key: FitKey, plan: CampaignPlan) -> FitRecord:
    """The record of the fit file ``path`` (opened through :mod:`qcf_studio.engine.data.safe_hdf5`, checked against the
    results
    contract and the campaign's parameters and QCF grid); never raises and never touches the file. A file that
    cannot be read, or does not fit the campaign, gives a ``failed`` record whose ``path`` is ``None``."""
    label = clip_path(path)
    try:
        with open_netcdf(path, label, max_file_bytes=MAX_FIT_BYTES, max_data_bytes=MAX_FIT_BYTES) as ds:
            check_results(ds, label)
            ds.load()
            record = fit_record(ds, key, path)
    except (ValueError, ResultsContractError, OSError, KeyError) as e:
        return missing_record(key, "failed", f"{path.name} is unreadable ({clip(str(e))})")
    problem = get_problem(plan.spec.problem.kind)
    shape = (len(problem.qcf_names), *(g.shape[0] for g in qcf_grids(plan.spec)))
    if record.status == "completed" and (
        record.estimate is None
        or record.qcf_estimate is None
        or np.shape(record.estimate) != (len(problem.param_names),)
        or np.shape(record.qcf_estimate) != shape
    ):
        return missing_record(key, "failed", f"{path.name} does not match the campaign's parameters or QCF grid")
    return record


def _criterion_met(rbv: np.ndarray, coverage_interval: np.ndarray, level: float) -> int:
    """Parameters with R_bv in :data:`R_BV_RANGE` and ``level`` inside their 1σ coverage interval (param, bound)."""
    return sum(R_BV_RANGE[0] <= r <= R_BV_RANGE[1] and lo <= level <= hi for r, (lo, hi) in zip(rbv, coverage_interval))


def _members_text(dof: np.ndarray) -> str:
    """The members behind a method's errors in words, e.g. "4 bootstrap members" or "3–4 bootstrap members"."""
    n = dof[np.isfinite(dof)] + 1
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} bootstrap members" if lo == hi else f"{lo}–{hi} bootstrap members"


def _interval(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack([lo, hi], axis=-1)


def build_summary(plan: CampaignPlan, records: dict[FitKey, FitRecord]) -> xr.Dataset:
    """The campaign's summary Dataset from the records of its fits (missing keys count as missing fits)."""
    spec, campaign = plan.spec, plan.campaign
    problem = get_problem(spec.problem.kind)
    methods, params, n_rep = list(campaign.methods), list(problem.param_names), campaign.replicas
    grids = qcf_grids(spec)
    qshape = (len(problem.qcf_names), *(g.shape[0] for g in grids))
    n_m, n_p = len(methods), len(params)

    est = np.full((n_m, n_rep, n_p), np.nan)
    err = np.full_like(est, np.nan)
    below, above = np.full_like(est, np.nan), np.full_like(est, np.nan)
    truth = np.full((n_rep, n_p), np.nan)
    status = np.full((n_m, n_rep), "missing", dtype=object)
    wall = np.full((n_m, n_rep), np.nan)
    dof = np.full((n_m, n_rep), np.nan)
    q_est = np.full((n_m, n_rep, *qshape), np.nan)
    q_err = np.full_like(q_est, np.nan)
    q_true = np.full((n_rep, *qshape), np.nan)
    draws_n = {
        m: {r.draws.shape[0] for k, r in records.items() if k.method == m and r.draws is not None} for m in methods
    }
    sbc = np.full((n_m, n_rep, n_p), np.nan)
    at_bound = np.zeros((n_m, n_rep, n_p), dtype=np.int8)
    for r in range(n_rep):
        truth[r] = list(replica_truth(spec, r).values())
    for key, rec in records.items():
        if key.method not in methods or key.replica >= n_rep:
            continue
        i, r = methods.index(key.method), key.replica
        status[i, r], wall[i, r] = rec.status, rec.wall_seconds
        if rec.status != "completed" or rec.estimate is None:
            continue
        est[i, r], err[i, r], dof[i, r] = rec.estimate, rec.error, rec.dof
        if rec.below is not None and rec.above is not None:
            below[i, r], above[i, r] = rec.below, rec.above
        if rec.at_bound is not None and np.shape(rec.at_bound) == (n_p,):
            at_bound[i, r] = rec.at_bound
        q_est[i, r], q_err[i, r], q_true[r] = rec.qcf_estimate, rec.qcf_error, rec.qcf_truth
        if rec.draws is not None and len(draws_n[key.method]) == 1:
            sbc[i, r] = stats.sbc_ranks(rec.draws, truth[r])

    toward = np.where(est > truth[None], below, above)  # MINOS's error on the truth's side, where it ran
    toward = np.where(np.isfinite(toward) & (toward > 0), toward, err)
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = (est - truth[None]) / toward
    dims_q = ("qcf", "x", "y")[: len(qshape)]
    coords = {
        "method": methods,
        "replica": np.arange(n_rep),
        "param": params,
        "qcf": list(problem.qcf_names),
        "x": grids[0],
        "bound": ["low", "high"],
        "level": np.asarray(COVERAGE_LEVELS),
    }
    if len(grids) > 1:
        coords["y"] = grids[1]
    ds = xr.Dataset(coords=coords)
    ds["estimate"] = (("method", "replica", "param"), est)
    ds["error"] = (("method", "replica", "param"), err)
    ds["truth"] = (("replica", "param"), truth)
    ds["error_toward_truth"] = (("method", "replica", "param"), toward)
    ds["error_toward_truth"].attrs["description"] = (
        "the fit's error on the truth's side of its estimate: MINOS's lower or upper error where the likelihood fit "
        "ran MINOS (near a bound), else error"
    )
    ds["pull"] = (("method", "replica", "param"), pull)
    ds["pull"].attrs["description"] = "(estimate − truth) / error_toward_truth"
    ds["status"] = (("method", "replica"), status.astype(str))
    ds["wall_seconds"] = (("method", "replica"), wall)
    ds["n_fits"] = (("method",), (status == "completed").sum(1).astype(np.int64))
    ds["at_bound"] = (("method", "replica", "param"), at_bound)
    ds["at_bound"].attrs["description"] = (
        "1 where the fit's error reaches a bound of the parameter's range: MINUIT's at-limit flag for a likelihood "
        "fit; for a GAN, an estimate within 2 errors of a bound or a member at it (engine.results.bounds)"
    )

    # Per method and parameter: the pulls over the replicas are axis 1 of (method, replica, param).
    cov1, cov2, curve = [], [], []
    for i in range(n_m):
        f, lo, hi, _ = stats.coverage(pull[i], 1.0)
        cov1.append((f, lo, hi))
        f, lo, hi, _ = stats.coverage(pull[i], 2.0)
        cov2.append((f, lo, hi))
        curve.append([stats.coverage(pull[i], float(norm.ppf(0.5 + lvl / 2)))[:3] for lvl in COVERAGE_LEVELS])
    ds["coverage_1sigma"] = (("method", "param"), np.stack([c[0] for c in cov1]))
    ds["coverage_1sigma_interval"] = (("method", "param", "bound"), np.stack([_interval(c[1], c[2]) for c in cov1]))
    ds["coverage_2sigma"] = (("method", "param"), np.stack([c[0] for c in cov2]))
    ds["coverage_2sigma_interval"] = (("method", "param", "bound"), np.stack([_interval(c[1], c[2]) for c in cov2]))
    curve_arr = np.asarray(curve)  # (method, level, 3, param)
    ds["coverage"] = (("method", "param", "level"), curve_arr[:, :, 0].transpose(0, 2, 1))
    ds["coverage_interval"] = (
        ("method", "param", "level", "bound"),
        np.stack([curve_arr[:, :, 1], curve_arr[:, :, 2]], -1).transpose(0, 2, 1, 3),
    )
    ds["coverage"].attrs["description"] = "fraction of fits whose Gaussian interval at the level covers the truth"
    ds["error_dof"] = (("method", "replica"), dof)
    ds["error_dof"].attrs["description"] = "degrees of freedom of the fit's error (inf: known, n − 1: n members)"
    expected = np.stack([stats.expected_coverage(np.asarray(COVERAGE_LEVELS), dof[i]) for i in range(n_m)])
    ds["coverage_expected"] = (("method", "level"), expected)
    ds["coverage_expected"].attrs["description"] = (
        "coverage of a calibrated method at each level, given its errors' degrees of freedom (Student's t)"
    )

    rbv = np.stack([stats.r_bv(est[i], toward[i], truth) for i in range(n_m)])
    rbv_iv = np.stack([_interval(*stats.r_bv_interval(est[i], toward[i], truth, seed=i)) for i in range(n_m)])
    ds["r_bv"] = (("method", "param"), rbv)
    ds["r_bv_interval"] = (("method", "param", "bound"), rbv_iv)
    ds["r_bv"].attrs["description"] = "sqrt(mean (estimate − truth)² / mean error_toward_truth²) over the replicas"
    means = [stats.mean_interval(pull[i]) for i in range(n_m)]
    widths = [stats.width_interval(pull[i]) for i in range(n_m)]
    ds["pull_mean"] = (("method", "param"), np.stack([m[0] for m in means]))
    ds["pull_mean_interval"] = (("method", "param", "bound"), np.stack([_interval(m[1], m[2]) for m in means]))
    ds["pull_width"] = (("method", "param"), np.stack([w[0] for w in widths]))
    ds["pull_width_interval"] = (("method", "param", "bound"), np.stack([_interval(w[1], w[2]) for w in widths]))
    ds["pull_ks_pvalue"] = (("method", "param"), np.stack([stats.ks_normal_pvalue(pull[i]) for i in range(n_m)]))

    # QCFs: judged where the truth is not negligible and x lies in the core range, as single closures are.
    core = problem.core_range
    spatial = tuple(range(2, q_true.ndim))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # replicas not fitted yet: all NaN
        floor = QCF_FLOOR * np.nanmax(np.abs(q_true), axis=spatial, keepdims=True)
    in_core = (grids[0] >= core[0]) & (grids[0] <= core[1])
    judged = (np.abs(q_true) >= floor) & in_core.reshape((1, 1, -1) + (1,) * (len(qshape) - 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        q_pull = np.where(judged[None], (q_est - q_true[None]) / q_err, np.nan)
        q_rbv = np.stack([stats.r_bv(q_est[i], np.where(judged, q_err[i], np.nan), q_true) for i in range(n_m)])
    xi = np.stack([stats.coverage(q_pull[i], 1.0)[0] for i in range(n_m)])
    ds["qcf_xi_1sigma"] = (("method", *dims_q), xi)
    ds["qcf_xi_1sigma"].attrs["description"] = "fraction of fits whose QCF lies within 1σ of the truth (core range)"
    ds["qcf_r_bv"] = (("method", *dims_q), q_rbv)

    draws = {m: next(iter(draws_n[m])) if len(draws_n[m]) == 1 else 0 for m in methods}
    if campaign.truths == "prior" and any(draws.values()):
        ds["sbc_rank"] = (("method", "replica", "param"), sbc)
        ds["sbc_rank"].attrs["description"] = "draws of the fit below the truth (uniform on 0..draws if calibrated)"
        ds["sbc_draws"] = (("method",), np.asarray([draws[m] for m in methods], dtype=np.int64))
        ds["sbc_pvalue"] = (
            ("method", "param"),
            np.stack([stats.rank_uniformity_pvalue(sbc[i], max(draws[m], 1)) for i, m in enumerate(methods)]),
        )

    verdicts: dict[str, dict[str, str]] = {}
    one_sigma = COVERAGE_LEVELS.index(stats.ONE_SIGMA)
    for i, m in enumerate(methods):
        n = int(ds["n_fits"][i])
        exp1 = float(expected[i, one_sigma])
        cov_iv = ds["coverage_1sigma_interval"].values[i]
        verdicts[m] = {
            p: stats.verdict(
                n,
                tuple(ds["pull_mean_interval"].values[i, j]),
                tuple(cov_iv[j]),
                tuple(ds["r_bv_interval"].values[i, j]),
                exp1,
            )
            for j, p in enumerate(params)
        }
        ds.attrs[f"verdict_{m}"] = "; ".join(f"{p} {v}" for p, v in verdicts[m].items())
        ds.attrs[f"criterion_{m}"] = (
            f"{_criterion_met(rbv[i], cov_iv, stats.ONE_SIGMA)} of {n_p} parameters with R_bv in "
            f"[{R_BV_RANGE[0]}, {R_BV_RANGE[1]}] "
            f"and 68.3% inside the coverage interval ({n} fits)"
        )
        if n and abs(exp1 - stats.ONE_SIGMA) > 5e-4:
            ds.attrs[f"criterion_{m}"] += (
                f"; {_criterion_met(rbv[i], cov_iv, exp1)} of {n_p} with the {100 * exp1:.1f}% that right errors from "
                f"{_members_text(dof[i])} cover"
            )
        if n < stats.MIN_FITS_FOR_VERDICT:  # the counts so far, for watching; not yet a claim (as the verdicts)
            ds.attrs[f"criterion_{m}"] = (
                f"too few fits to judge ({n}, at least {stats.MIN_FITS_FOR_VERDICT}); so far "
                + ds.attrs[f"criterion_{m}"]
            )
    ds.attrs.update(
        {
            "kind": "qcf-studio campaign",
            "summary_version": SUMMARY_VERSION,
            "name": spec.name,
            "problem": spec.problem.kind,
            "spec": spec.to_yaml(),
            "verdicts": json.dumps(verdicts),
            "interval_level": stats.LEVEL,
            "truths": campaign.truths,
            "versions": json.dumps(package_versions()),
        }
    )
    return ds
