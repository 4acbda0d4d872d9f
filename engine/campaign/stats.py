"""The estimators of a closure campaign and their intervals (numpy and scipy only).

A method's quoted errors are right when, over many pseudo-data replicas from a known truth, the estimates
scatter around the truth as the errors say: pulls ``(estimate − truth) / error`` distributed as N(0, 1),
a fraction 68.3% (95.4%) of the truth within 1σ (2σ), and a bias–variance ratio R_bv = 1. Errors that are
themselves estimated from n bootstrap members are right on average (R_bv = 1) but scatter from fit to fit, so
their pulls follow Student's t with n − 1 degrees of freedom: :func:`expected_coverage` and
:func:`expected_pull_pdf` give what a calibrated method's coverage and pulls are then.

Every interval here is a central 95% interval (``LEVEL``).

References:
    Del Debbio et al., "Bayesian approach to inverse problems: an application to NNPDF closure testing",
    Eur. Phys. J. C 82 (2022) 330, doi:10.1140/epjc/s10052-022-10297-x (R_bv, ξ_1σ).
    Clopper and Pearson, Biometrika 26 (1934) 404 (binomial intervals).
    Talts et al., "Validating Bayesian inference algorithms with simulation-based calibration",
    arXiv:1804.06788 (SBC ranks).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

__all__ = [
    "LEVEL",
    "ONE_SIGMA",
    "TWO_SIGMA",
    "MIN_FITS_FOR_VERDICT",
    "clopper_pearson",
    "coverage",
    "r_bv",
    "r_bv_interval",
    "mean_interval",
    "width_interval",
    "ks_normal_pvalue",
    "expected_coverage",
    "expected_pull_pdf",
    "sbc_ranks",
    "rank_uniformity_pvalue",
    "verdict",
    "VERDICTS",
]

LEVEL = 0.95  # confidence level of every interval
ONE_SIGMA = math.erf(1 / math.sqrt(2))  # 0.6827: the fraction of N(0, 1) within ±1
TWO_SIGMA = math.erf(2 / math.sqrt(2))  # 0.9545
MIN_FITS_FOR_VERDICT = 10  # fewer completed fits say nothing about a method's errors
BOOTSTRAP_RESAMPLES = 2000
VERDICTS = ("calibrated", "over-confident", "under-confident", "biased")


def clopper_pearson(k: np.ndarray | int, n: np.ndarray | int, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The exact (Clopper–Pearson) central interval of a binomial fraction with ``k`` successes in ``n``."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    a = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(a, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, n - k), 1.0)
    empty = n <= 0
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def coverage(pulls: np.ndarray, z: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of finite ``pulls`` along ``axis`` with ``|pull| < z``: ``(fraction, low, high, n)``."""
    finite = np.isfinite(pulls)
    n = finite.sum(axis)
    k = (np.abs(np.where(finite, pulls, np.inf)) < z).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    lo, hi = clopper_pearson(k, n)
    return frac, lo, hi, n


def r_bv(estimate: np.ndarray, error: np.ndarray, truth: np.ndarray, axis: int = 0) -> np.ndarray:
    """Bias–variance ratio ``sqrt(mean (estimate − truth)² / mean error²)`` over the replicas on ``axis``
    (NaN entries left out): 1 when the errors are right, above 1 when they are too small."""
    ok = np.isfinite(estimate) & np.isfinite(error) & np.isfinite(truth)
    d2 = np.where(ok, (estimate - truth) ** 2, 0.0).sum(axis)
    e2 = np.where(ok, error**2, 0.0).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok.sum(axis) > 0, np.sqrt(d2 / e2), np.nan)


def r_bv_interval(
    estimate: np.ndarray, error: np.ndarray, truth: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of :func:`r_bv` over the replicas (axis 0), reproducible under ``seed``."""
    n = estimate.shape[0]
    if n < 2:
        shape = estimate.shape[1:]
        return np.full(shape, np.nan), np.full(shape, np.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    d2 = (estimate - truth) ** 2
    e2 = error**2
    ok = np.isfinite(d2) & np.isfinite(e2)
    d2, e2 = np.where(ok, d2, 0.0), np.where(ok, e2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.sqrt(d2[idx].sum(1) / e2[idx].sum(1))  # (resamples, ...)
    a = (1 - LEVEL) / 2
    with warnings.catch_warnings():  # a parameter no fit has yet: NaN, said once by the caller, not warned
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(values, a, axis=0), np.nanquantile(values, 1 - a, axis=0)


def _finite_columns(values: np.ndarray) -> list[np.ndarray]:
    flat = values.reshape(values.shape[0], -1)
    return [c[np.isfinite(c)] for c in flat.T]


def mean_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 (finite values) with its Student-t interval: ``(mean, low, high)``."""
    out = []
    for c in _finite_columns(values):
        n = c.size
        if n < 2:
            out.append((c.mean() if n else np.nan, np.nan, np.nan))
            continue
        half = stats.t.ppf((1 + LEVEL) / 2, n - 1) * c.std(ddof=1) / math.sqrt(n)
        out.append((c.mean(), c.mean() - half, c.mean() + half))
    arr = np.asarray(out, dtype=float).reshape(*values.shape[1:], 3)
    return arr[..., 0], arr[..., 1], arr[..., 2]


def width_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard deviation over axis 0 (finite values) with its χ² interval (Gaussian values): ``(sd, low, high)``."""
    out = []
    for c in _finite_columns(values):
        n = c.size
        if n < 2:
            out.append((np.nan, np.nan, np.nan))
            continue
        s2 = c.var(ddof=1)
        lo = math.sqrt((n - 1) * s2 / stats.chi2.ppf((1 + LEVEL) / 2, n - 1))
        hi = math.sqrt((n - 1) * s2 / stats.chi2.ppf((1 - LEVEL) / 2, n - 1))
        out.append((math.sqrt(s2), lo, hi))
    arr = np.asarray(out, dtype=float).reshape(*values.shape[1:], 3)
    return arr[..., 0], arr[..., 1], arr[..., 2]


def ks_normal_pvalue(values: np.ndarray) -> np.ndarray:
    """Kolmogorov–Smirnov p-value of the finite values (axis 0) against N(0, 1); NaN with fewer than 2."""
    out = [stats.kstest(c, "norm").pvalue if c.size >= 2 else np.nan for c in _finite_columns(values)]
    return np.asarray(out, dtype=float).reshape(values.shape[1:])


def _dof_weights(dof: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The distinct degrees of freedom of the fits (NaN and non-positive left out), and the share of fits of each."""
    d = np.atleast_1d(np.asarray(dof, dtype=float)).ravel()
    values, counts = np.unique(d[~np.isnan(d) & (d > 0)], return_counts=True)
    return values, counts / max(counts.sum(), 1)


def expected_coverage(levels: np.ndarray | float, dof: np.ndarray | float) -> np.ndarray:
    """Coverage of a calibrated method's Gaussian intervals at each nominal level, averaged over its fits.

    ``dof``: each fit's degrees of freedom of its error (``inf`` where the error is known, as a Hessian's is;
    n − 1 for the spread of n bootstrap members; NaN for fits that did not complete, left out). A fit's pull is
    then Student's t with ``dof``, and its interval at level L, ±Φ⁻¹((1 + L)/2)·error, covers the truth with
    probability 2·F_t(Φ⁻¹((1 + L)/2); dof) − 1 (below L). Without any finite dof the levels themselves.
    """
    lv = np.asarray(levels, dtype=float)
    d, w = _dof_weights(dof)
    if d.size == 0:
        return lv.copy()
    z = stats.norm.ppf(0.5 + lv / 2)[..., None]
    return np.asarray((2 * stats.t.cdf(z, d) - 1) @ w)


def expected_pull_pdf(x: np.ndarray, dof: np.ndarray | float) -> np.ndarray:
    """Density of a calibrated method's pulls at ``x``: the mean over fits of Student's t with each fit's
    ``dof`` (N(0, 1) where every dof is ``inf``, or none is known)."""
    xv = np.asarray(x, dtype=float)
    d, w = _dof_weights(dof)
    if d.size == 0:
        return np.asarray(stats.norm.pdf(xv))
    return np.asarray(stats.t.pdf(xv[..., None], d) @ w)


def sbc_ranks(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank of ``truth`` (P,) among ``draws`` (L, P): how many draws lie below it, 0..L (SBC, Talts et al.)."""
    return (draws < truth[None]).sum(0)


def rank_uniformity_pvalue(ranks: np.ndarray, draws: int) -> np.ndarray:
    """χ² p-value that SBC ``ranks`` (replica, ...) in 0..``draws`` are uniform, in at most 20 bins of at
    least 5 expected ranks each; NaN with fewer than 10 ranks."""
    out = []
    for c in _finite_columns(ranks.astype(float)):
        n = c.size
        bins = min(20, n // 5, draws + 1)
        if n < 10 or bins < 2:
            out.append(np.nan)
            continue
        counts, _ = np.histogram(c, bins=bins, range=(-0.5, draws + 0.5))
        out.append(stats.chisquare(counts).pvalue)
    return np.asarray(out, dtype=float).reshape(ranks.shape[1:])


def verdict(
    n: int,
    pull_mean_interval: tuple[float, float],
    coverage_interval: tuple[float, float],
    r_bv_bounds: tuple[float, float],
    expected_1sigma: float = ONE_SIGMA,
) -> str:
    """A method's errors for one parameter in words, judged against the 95% intervals:

    - ``biased``: the pulls' mean is away from 0 (its interval excludes 0) and that is why the errors fall
      short, or the errors are otherwise consistent;
    - ``over-confident``: errors too small (R_bv above 1, or 1σ coverage below ``expected_1sigma``, beyond the
      intervals);
    - ``under-confident``: errors too large (R_bv below 1, or coverage above ``expected_1sigma``);
    - ``calibrated``: all consistent; ``too few fits (n)`` below :data:`MIN_FITS_FOR_VERDICT`.

    ``expected_1sigma``: what right errors cover at 1σ, 68.3% unless they are estimated from few bootstrap
    members (:func:`expected_coverage`).

    Each is a test at 95%: over many parameters a calibrated method is called otherwise now and then.
    """
    if n < MIN_FITS_FOR_VERDICT:
        return f"too few fits ({n})"
    lo, hi = pull_mean_interval
    shifted = lo > 0 or hi < 0
    c_lo, c_hi = coverage_interval
    r_lo, r_hi = r_bv_bounds
    if r_lo > 1 or c_hi < expected_1sigma:
        return "biased" if shifted else "over-confident"
    if r_hi < 1 or c_lo > expected_1sigma:
        return "under-confident"
    return "biased" if shifted else "calibrated"
