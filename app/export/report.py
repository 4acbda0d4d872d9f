"""The closure report of one run: a verdict per criterion of design.md ("Closure criteria"), in words.

Each criterion is a :class:`Criterion` with its number, its limit and a sentence a physicist reads
("the largest |pull| is 1.47 (bu), within the 3σ limit ..."). The numbers come from the result's
variables (``pull``, ``qcf_pred`` ...) rather than from its ``closure_*`` attributes, so a report
always describes the data it is given. :func:`report_markdown` is the report as Markdown; the
dashboard and ``qcf-studio export`` show it. No Panel or HoloViews here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from qcf_studio.engine.campaign.findings import FINDINGS, findings_for, settings_of
from qcf_studio.engine.campaign.stats import ONE_SIGMA, TWO_SIGMA, expected_coverage
from qcf_studio.engine.results import (
    ERROR_RATIO_LIMIT,
    PULL_LIMIT,
    QCF_SIGMA_LIMIT,
    error_dof,
    estimate,
    fitted_members,
    is_bootstrap,
    qcf_deviation,
)
from qcf_studio.engine.results.bounds import REACH, errors_at_bound
from qcf_studio.engine.results.fit_quality import fit_quality_findings
from qcf_studio.engine.safe_yaml import load_yaml
from qcf_studio.engine.textlimits import clip, shown

__all__ = [
    "Criterion",
    "closure_report",
    "closure_verdict",
    "verdict_text",
    "report_markdown",
    "core_range",
    "criterion_label",
    "parameter_table",
    "value_error",
    "CALIBRATION",
    "AT_BOUND",
    "PULL_LIMIT",
    "QCF_SIGMA_LIMIT",
    "ERROR_RATIO_LIMIT",
]

# The limits (PULL_LIMIT, QCF_SIGMA_LIMIT, ERROR_RATIO_LIMIT) are engine.results', which judges closure_passed by them.

# Criterion names (stable: the dashboard and tests look criteria up by them).
STATUS, QCF, PULLS, COVERAGE, CHI2, ERRORS, CALIBRATION, LIKELIHOOD_FIT, AT_BOUND = (
    "Run status",
    "QCF closure",
    "Parameter pulls",
    "Coverage",
    "χ²/ndf",
    "GAN/MLE errors",
    "Error calibration",
    "Likelihood fit",
    "Errors at a bound",
)


@dataclass(frozen=True)
class Criterion:
    """One line of the closure report.

    Attributes:
        name: what is judged (``"Parameter pulls"``, ...).
        value: the judged number (e.g. the largest |pull|), ``None`` where there is none.
        limit: the number ``value`` is held against, ``None`` where there is none.
        passed: ``True``/``False``; ``None`` when not applicable or unknown (no truth, no reference).
        text: one or two sentences saying what was found, in the words of a closure test.
        decisive: whether the criterion enters the closure verdict (coverage and χ²/ndf are informative).
    """

    name: str
    value: float | None
    limit: float | None
    passed: bool | None
    text: str
    decisive: bool = True


def _n(v: float, fmt: str = ".2f") -> str:
    """A number for prose: typographic minus sign."""
    return format(float(v), fmt).replace("-", "−")


def _pct(f: float) -> str:
    return f"{100 * f:.0f}%"


def _chi2_quantile(p_z: float, ndf: int) -> float:
    """Quantile of χ²/ndf at the standard-normal quantile ``p_z`` (Wilson–Hilferty; no SciPy needed)."""
    a = 2.0 / (9.0 * ndf)
    return (1.0 - a + p_z * math.sqrt(a)) ** 3


def _status(ds: xr.Dataset) -> Criterion:
    status = str(ds.attrs.get("status", "unknown"))
    if status == "completed":
        return Criterion(STATUS, None, None, True, "The run completed: every member trained all its steps.")
    done = ""
    if "steps_done" in ds:
        lo, hi = int(ds["steps_done"].min()), int(ds["steps_done"].max())
        done = f" after {lo}" if lo == hi else f" after {lo}–{hi}"
        training = _spec_mapping(ds).get("training")
        try:
            done += f" of {int(training['steps'])} steps"
        except (KeyError, TypeError, ValueError):
            done += " steps"
    why = {"stopped": "it was stopped", "failed": "it failed"}.get(status, f"its status is {shown(status)}")
    text = f"The run did not complete: {why}{done}, so its fit is not final and closure cannot pass."
    errors = str(ds.attrs.get("errors", "")).strip()
    if errors:
        text += f" Error: {clip(errors.splitlines()[0], 300)}"
    return Criterion(STATUS, None, None, False, text)


def core_range(ds: xr.Dataset) -> tuple[float, float]:
    """Where QCFs are judged along x: the problem's core range (the whole grid for an unregistered problem)."""
    from qcf_studio.engine.problems import get_problem

    try:
        lo, hi = get_problem(str(ds.attrs.get("problem"))).core_range
        return float(lo), float(hi)
    except KeyError:  # a user problem not registered in this process
        return float(ds["x"].min()), float(ds["x"].max())


def _qcf(ds: xr.Dataset, dev: xr.DataArray) -> Criterion:
    lo, hi = core_range(ds)
    where = f"x ∈ [{lo:g}, {hi:g}]" + (" (all y)" if "y" in dev.dims else "")
    if not bool(dev.notnull().any()):
        return Criterion(QCF, None, QCF_SIGMA_LIMIT, None, f"No QCF point of {where} could be judged.")
    worst = float(dev.max())
    idx = dev.fillna(-1.0).argmax(...)
    point = {d: dev[d].values[int(i)] for d, i in idx.items()}
    at = f"{point['qcf']} at x = {float(point['x']):.3g}" + (f", y = {float(point['y']):.3g}" if "y" in point else "")
    passed = worst <= QCF_SIGMA_LIMIT
    text = (
        f"QCF closure: the ensemble-mean QCF lies within {_n(worst)}σ of the truth everywhere in {where}; "
        f"the largest deviation is for {at}, "
        + ("within" if passed else "outside")
        + f" the {QCF_SIGMA_LIMIT:g}σ limit."
    )
    if not passed:
        frac = float((dev > QCF_SIGMA_LIMIT).sum() / dev.notnull().sum())
        text = (
            f"QCF closure: the ensemble-mean QCF deviates from the truth by up to {_n(worst)}σ ({at}), "
            f"beyond the {QCF_SIGMA_LIMIT:g}σ limit; {_pct(frac)} of the points in {where} lie outside "
            f"{QCF_SIGMA_LIMIT:g}σ."
        )
    return Criterion(QCF, worst, QCF_SIGMA_LIMIT, passed, text)


def _pulls(ds: xr.Dataset) -> Criterion:
    pulls = ds["pull"]
    n = int(pulls.sizes["param"])
    absp = np.abs(pulls)
    worst = float(absp.max())
    name = str(pulls["param"].values[int(np.nanargmax(absp.values))])
    mean, rms = float(pulls.mean()), float(np.sqrt((pulls**2).mean()))
    # 95% ranges of the mean and the RMS of n draws from N(0, 1)
    mean_lim = 1.96 / math.sqrt(n)
    rms_lo, rms_hi = math.sqrt(_chi2_quantile(-1.96, n)), math.sqrt(_chi2_quantile(1.96, n))
    passed = worst <= PULL_LIMIT
    shape = []
    if abs(mean) > mean_lim:
        shape.append(f"the mean is {'above' if mean > 0 else 'below'} 0 by more than 1.96/√{n}")
    if rms > rms_hi:
        shape.append("the spread is wider than N(0, 1): errors underestimated or a bias")
    elif rms < rms_lo:
        shape.append("the spread is narrower than N(0, 1): errors overestimated")
    consistent = "consistent with N(0, 1)" if not shape else "not quite N(0, 1): " + "; ".join(shape)
    text = (
        f"Parameter pulls: the largest |pull| is {_n(worst)} ({name}), "
        + ("within" if passed else "beyond")
        + f" the {PULL_LIMIT:g}σ limit; the mean pull is {_n(mean)} "
        f"and the RMS {_n(rms)}, {consistent} for {n} parameters."
    )
    return Criterion(PULLS, worst, PULL_LIMIT, passed, text)


def _expected_coverage(ds: xr.Dataset) -> tuple[float, float, str]:
    """What right errors of this result cover at 1σ and 2σ, and why when not 68% and 95%: errors from n bootstrap
    members make the pulls Student's t with n − 1 degrees of freedom (:mod:`qcf_studio.engine.campaign.stats`)."""
    dof = error_dof(ds)
    if 0 < dof < float("inf"):
        e1, e2 = expected_coverage(np.array([ONE_SIGMA, TWO_SIGMA]), dof)
        return (
            float(e1),
            float(e2),
            f" for errors from {int(dof) + 1} bootstrap members, whose pulls follow Student's t",
        )
    return ONE_SIGMA, TWO_SIGMA, ""


def _coverage(ds: xr.Dataset, dev: xr.DataArray | None) -> Criterion:
    absp = np.abs(ds["pull"].values)
    n = absp.size
    f1, f2 = float(np.mean(absp <= 1)), float(np.mean(absp <= 2))
    e1, e2, why = _expected_coverage(ds)
    tol = 2 * math.sqrt(e1 * (1 - e1) / n)  # two binomial standard deviations at the expected 1σ coverage
    if f1 > e1 + tol:
        verdict = "over-covers (errors look too large)"
    elif f1 < e1 - tol:
        verdict = "under-covers (errors look too small)"
    else:
        verdict = f"is consistent with {_pct(e1)}"
    text = (
        f"Coverage: {_pct(f1)} of the {n} parameters lie within 1σ of the truth and {_pct(f2)} within 2σ "
        f"(expected {_pct(e1)} and {_pct(e2)}{why}); the parameter coverage {verdict}."
    )
    if dev is not None and bool(dev.notnull().any()):
        v = dev.values[~np.isnan(dev.values)]
        q1, q2 = float(np.mean(v <= 1)), float(np.mean(v <= 2))
        text += (
            f" Of the {v.size} judged QCF points, {_pct(q1)} lie within 1σ and {_pct(q2)} within 2σ "
            "(neighbouring points are correlated, so this is indicative)."
        )
    return Criterion(COVERAGE, f1, e1, None, text, decisive=False)


def _chi2(ds: xr.Dataset) -> Criterion:
    chi2 = ds["chi2_ndf"]
    if not bool(chi2.notnull().any()):
        return Criterion(CHI2, None, None, None, "χ²/ndf: no histograms to compare.", decisive=False)
    parts, passed, worst, worst_limit = [], True, -1.0, None
    for obs in chi2["observable"].values:
        c = chi2.sel(observable=obs)
        if not bool(c.notnull().any()):
            continue
        m = int(np.nanargmax(c.values))
        value = float(c.values[m])
        used = (ds["hist_data"].sel(observable=obs) > 0) | (ds["hist_gen"].sel(observable=obs).isel(member=m) > 0)
        ndf = max(int(used.sum()) - 1, 1)
        limit = _chi2_quantile(3.09, ndf)  # p = 0.001
        ok = value <= limit
        passed = passed and ok
        parts.append(f"{obs} {_n(value)} (ndf {ndf}, limit {_n(limit)})" + ("" if ok else " — too large"))
        if value > worst:
            worst, worst_limit = value, limit
    fits = "describe the data (p > 0.001)" if passed else "do not describe the data everywhere (p < 0.001)"
    text = (
        f"χ²/ndf of generated vs measured histograms (worst member): {', '.join(parts)}. The generated events {fits}."
    )
    return Criterion(CHI2, worst, worst_limit, passed, text, decisive=False)


def _errors(ds: xr.Dataset) -> Criterion:
    if ds.attrs.get("method") == "mle" or "params_mle_err" not in ds:
        text = (
            "this run is the maximum-likelihood fit, the statistical reference itself."
            if ds.attrs.get("method") == "mle"
            else "the run has no maximum-likelihood reference (training.mle_reference: true adds one), so the "
            "errors are not compared with the statistical limit."
        )
        return Criterion(ERRORS, None, ERROR_RATIO_LIMIT, None, f"GAN/MLE errors: {text}")
    err = ds["params_ensemble_err"] if "params_ensemble_err" in ds else estimate(ds, "params")[1]
    ratio = err / ds["params_mle_err"]
    if not bool(ratio.notnull().any()):  # e.g. HESSE failed: the reference's errors are NaN
        return Criterion(ERRORS, None, ERROR_RATIO_LIMIT, None, "GAN/MLE errors: no error ratio is finite.")
    worst = float(ratio.max())
    name = str(ratio["param"].values[int(np.nanargmax(ratio.values))])
    passed = worst <= ERROR_RATIO_LIMIT
    fitted = fitted_members(ds)  # failed members (NaN) are left out of the spread
    source = (
        f"the spread of {fitted} members fitted to bootstrap replicas"
        if is_bootstrap(ds)
        else "the generators' spread plus the spread between members"
    )
    text = (
        f"GAN/MLE errors: the largest ratio of the ensemble error ({source}) to the maximum-likelihood "
        f"error is {_n(worst)} ({name}), " + ("within" if passed else "above") + f" the limit of {ERROR_RATIO_LIMIT:g}."
    )
    low = float(ratio.min())
    if low < 1 / ERROR_RATIO_LIMIT:
        narrow = ratio["param"].values[int(np.nanargmin(ratio.values))]
        text += f" The error of {narrow} is {_n(low)}× the statistical limit, narrower than the data allow."
    return Criterion(ERRORS, worst, ERROR_RATIO_LIMIT, passed, text)


def _calibration(ds: xr.Dataset) -> Criterion:
    """What closure campaigns found about this kind of error (:mod:`qcf_studio.engine.campaign.findings`): one data
    set cannot show whether errors are right, so the report says whether campaigns of the same problem and method,
    made the way this run was, found them right."""
    check = "`qcf-studio campaign` with this spec fits many replicas and says whether these errors are."
    problem, method = str(ds.attrs.get("problem", "")), str(ds.attrs.get("method", ""))
    if method == "mle":
        found = findings_for(problem, "mle", "hessian")
        if not found:
            text = f"Error calibration: no campaign of {problem} is on record for the likelihood fit. "
        elif found[0].calibrated:
            text = (
                f"Error calibration: the likelihood fit's HESSE errors were found calibrated by a campaign of "
                f"{problem} ({found[0].numbers}; docs/campaigns.md). "
            )
        else:
            text = (
                f"Error calibration: a campaign of {problem} found the likelihood fit's HESSE errors not all "
                f"calibrated ({found[0].numbers}; docs/campaigns.md). "
            )
        return Criterion(CALIBRATION, None, None, None, text + check, decisive=False)
    if not is_bootstrap(ds):
        measured = "; ".join(f"{f.problem}: {f.numbers}" for f in FINDINGS if f.errors == "generator")
        text = (
            "Error calibration: these errors are the generators' spread, which is not a statistical error; a single "
            f"data set cannot show whether they are right, and campaigns found them uncalibrated ({measured}; "
            "docs/campaigns.md): a passing closure here does not mean the errors cover the truth. An ensemble with "
            "ensemble.bootstrap gives errors campaigns can calibrate. " + check
        )
        return Criterion(CALIBRATION, None, None, None, text, decisive=False)
    found = findings_for(problem, "gan", "bootstrap")
    settings = settings_of(_spec_mapping(ds))
    covering = [f for f in found if f.covers(settings)]
    if covering:
        f = covering[0]
        verdict = "calibrated" if f.calibrated else "uncalibrated"
        text = (
            f"Error calibration: these errors come from the spread of bootstrap members; a campaign of {problem} made "
            f"with this run's settings ({f.describe()}) found them {verdict}: {f.numbers} (docs/campaigns.md). "
        )
        if not f.calibrated:
            text += "A passing closure here does not mean the errors cover the truth. "
        return Criterion(CALIBRATION, None, None, None, text + check, decisive=False)
    text = (
        "Error calibration: these errors come from the spread of bootstrap members, and no campaign was made with this "
        "run's settings, so whether they cover the truth is not known"
    )
    if found:
        text += (
            "; campaigns of "
            + problem
            + " with other settings found: "
            + "; ".join(f"{f.describe()}: {'calibrated' if f.calibrated else 'uncalibrated'}" for f in found)
        )
    text += " (docs/campaigns.md). " + check
    return Criterion(CALIBRATION, None, None, None, text, decisive=False)


def _spec_mapping(ds: xr.Dataset) -> dict:
    """The run's spec as a mapping, or an empty one when the file's spec cannot be read."""
    try:
        spec = load_yaml(str(ds.attrs.get("spec", "")))
    except Exception:  # noqa: BLE001 (a results file from someone else: no spec, no settings to match)
        return {}
    return spec if isinstance(spec, dict) else {}


def has_truth(ds: xr.Dataset) -> bool:
    return "params_true" in ds and "pull" in ds and "qcf_true" in ds


def closure_report(ds: xr.Dataset) -> list[Criterion]:
    """The closure criteria of design.md for one result, in the order status, QCF, pulls, coverage,
    χ²/ndf, GAN/MLE errors, MINUIT's verdict on the likelihood fit (where the file has one), a GAN's errors that
    reach a bound of their range (where there are such) and what closure
    campaigns found about this kind of error.

    Without a truth (a fit of measured data) the QCF, pull and coverage criteria say that closure
    cannot be judged; χ²/ndf and the GAN/MLE errors are still reported.
    """
    out = [_status(ds)]
    if has_truth(ds):
        dev = qcf_deviation(ds, core_range(ds))
        out += [_qcf(ds, dev), _pulls(ds), _coverage(ds, dev)]
    else:
        why = "no truth is known (measured data), so closure cannot be judged"
        out += [
            Criterion(QCF, None, QCF_SIGMA_LIMIT, None, f"QCF closure: {why}."),
            Criterion(PULLS, None, PULL_LIMIT, None, f"Parameter pulls: {why}."),
            Criterion(COVERAGE, None, 0.68, None, f"Coverage: {why}.", decisive=False),
        ]
    if "chi2_ndf" in ds:
        out.append(_chi2(ds))
    out.append(_errors(ds))
    found = fit_quality_findings(ds)  # MINUIT's verdict on the likelihood fit or reference: invalid, at a bound
    if found is not None:
        out.append(Criterion(LIKELIHOOD_FIT, None, None, found[0], found[1], decisive=False))
    near = _at_bound(ds)
    if near is not None:
        out.append(near)
    out.append(_calibration(ds))
    return out


def _at_bound(ds: xr.Dataset) -> Criterion | None:
    """A GAN run's parameters whose error interval reaches a bound of their range
    (:mod:`qcf_studio.engine.results.bounds`)."""
    near = errors_at_bound(ds)
    if not near:
        return None
    listed = [f"{clip(name, 40)} {value_error(m, e)} (bound {_fmt(b)})" for name, (b, m, e) in list(near.items())[:6]]
    more = f" and {len(near) - 6} more" if len(near) > 6 else ""
    text = (
        f"Errors at a bound: {'; '.join(listed)}{more} lie within {REACH:g} errors of a bound of their range, "
        "or have members at it. "
        "Members whose data pull a parameter past its bound pile up at it, so their spread may understate its "
        "error and those of the parameters correlated with it, as multiset2d's campaign found on B_p4 "
        "(docs/campaigns.md). The likelihood "
        "fit's MINOS interval allows for a bound; a wider range, where the physics allows it, avoids the question."
    )
    return Criterion(AT_BOUND, float(len(near)), None, False, text, decisive=False)


def closure_verdict(criteria: list[Criterion]) -> bool | None:
    """``False`` if a decisive criterion failed; ``None`` if closure was not judged (no truth); else ``True``."""
    if any(c.decisive and c.passed is False for c in criteria):
        return False
    judged = {c.name: c.passed for c in criteria}
    if judged.get(QCF) is None or judged.get(PULLS) is None:
        return None
    return True


def verdict_text(criteria: list[Criterion]) -> str:
    """``"Closure passed"``, ``"Closure FAILED: <criteria>"`` or ``"Closure not judged: ..."``."""
    v = closure_verdict(criteria)
    if v is True:
        return "Closure passed"
    if v is False:
        return "Closure FAILED: " + ", ".join(c.name for c in criteria if c.decisive and c.passed is False)
    return "Closure not judged: no truth is known"


def criterion_label(c: Criterion) -> str:
    """pass/FAIL for a decisive criterion (n/a when not judged); ok/warn/info for an informative one."""
    if c.decisive:
        return "n/a" if c.passed is None else ("pass" if c.passed else "FAIL")
    return "info" if c.passed is None else ("ok" if c.passed else "warn")


def _fmt(v: float) -> str:
    return "—" if v is None or not np.isfinite(v) else format(float(v), ".4g").replace("-", "−")


def value_error(value: float, error: float) -> str:
    """``value ± error`` with the error to two significant digits and the value to the same decimals."""
    if not (np.isfinite(value) and np.isfinite(error)) or error <= 0:
        return f"{_fmt(value)} ± {_fmt(error)}"
    decimals = max(0, 1 - int(math.floor(math.log10(error))))
    return f"{_n(value, f'.{decimals}f')} ± {_n(error, f'.{decimals}f')}"


def parameter_table(ds: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the parameter table: truth, ensemble mean ± error, pull, MLE ± error, ratio."""
    mean, err = (
        (ds["params_ensemble"], ds["params_ensemble_err"]) if "params_ensemble" in ds else estimate(ds, "params")
    )
    cols = ["parameter"] + (["truth"] if "params_true" in ds else []) + ["ensemble mean ± error"]
    cols += ["pull"] if "pull" in ds else []
    mle = "params_mle" in ds and "params_mle_err" in ds
    cols += ["MLE ± error", "error ratio"] if mle else []
    rows = []
    for p in ds["param"].values:
        row = [str(p)]
        if "params_true" in ds:
            row.append(_fmt(ds["params_true"].sel(param=p)))
        row.append(value_error(float(mean.sel(param=p)), float(err.sel(param=p))))
        if "pull" in ds:
            row.append(_n(ds["pull"].sel(param=p)))
        if mle:
            row.append(value_error(float(ds["params_mle"].sel(param=p)), float(ds["params_mle_err"].sel(param=p))))
            row.append(_n(err.sel(param=p) / ds["params_mle_err"].sel(param=p)))
        rows.append(row)
    return cols, rows


def run_title(ds: xr.Dataset) -> str:
    return f"Closure report: {ds.attrs.get('name', 'run')}"


def run_summary(ds: xr.Dataset) -> str:
    """One line: problem, method, status, wall time, members."""
    a = ds.attrs
    members = int(ds.sizes.get("member", 0))
    wall = float(a.get("wall_seconds", float("nan")))
    return (
        f"problem {a.get('problem', '?')} · method {a.get('method', '?')} · status {a.get('status', '?')} · "
        f"wall time {wall:.1f} s · {members} member{'s' if members != 1 else ''}"
    )


def report_markdown(ds: xr.Dataset, criteria: list[Criterion] | None = None) -> str:
    """The closure report as Markdown: title, run summary, verdict, one line per criterion, parameter table."""
    criteria = closure_report(ds) if criteria is None else criteria
    lines = [f"# {run_title(ds)}", "", run_summary(ds), "", f"**Verdict: {verdict_text(criteria)}**", ""]
    lines += [f"- **{criterion_label(c)}** — {c.text}" for c in criteria]
    cols, rows = parameter_table(ds)
    lines += ["", "## Parameters", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
