"""MINUIT (iminuit) on the NLL of :mod:`qcf_studio.engine.mle.likelihood`: the objective it calls, MIGRAD from one
start, HESSE,
MINOS where a parameter is near a bound, and which parameters sit at one.

References:
    F. James and M. Roos, "Minuit: a system for function minimization and analysis of the parameter errors and
    correlations", Comput. Phys. Commun. 10 (1975) 343; iminuit, https://scikit-hep.org/iminuit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from iminuit import Minuit
from torch import Tensor

_F64 = torch.float64

__all__ = [
    "FitStopped",
    "MinosInterval",
    "Objective",
    "at_bound",
    "hesse_covariance",
    "hesse_holding",
    "migrad",
    "minos",
    "near_a_bound",
]

BOUND_FRACTION = 1e-3  # an estimate this fraction of its range from a limit, or closer, is at the bound
MINOS_SIGMAS = 2.0  # MINOS runs for parameters whose estimate is within this many HESSE errors of a limit


class FitStopped(Exception):
    """Raised from :class:`Objective` to end MIGRAD when the user asked the fit to stop."""


@dataclass
class Objective:
    """The NLL for Minuit: ``fcn(x)`` in float64 without a graph, and ``grad(x)`` by autograd.

    ``on_call(value, x)`` runs after every ``fcn`` call while it is set (MIGRAD sets it; HESSE and MINOS do not
    report live); it may raise :class:`FitStopped`. ``calls`` and ``grads`` count the evaluations.
    """

    nll: Callable[[Tensor], Tensor]
    on_call: Callable[[float, np.ndarray], None] | None = None
    calls: int = 0
    grads: int = 0

    def __call__(self, x: np.ndarray) -> float:
        with torch.no_grad():
            value = float(self.nll(torch.tensor(x, dtype=_F64)))
        self.calls += 1
        if self.on_call is not None:
            self.on_call(value, x)
        return value

    def grad(self, x: np.ndarray) -> np.ndarray:
        theta = torch.tensor(x, dtype=_F64, requires_grad=True)
        (g,) = torch.autograd.grad(self.nll(theta), theta)
        self.grads += 1
        return g.numpy()


def migrad(
    objective: Objective,
    start: Tensor,
    lo: Tensor,
    hi: Tensor,
    names: Sequence[str],
    ncall: int | None,
    tol: float,
    strategy: int = 1,
) -> Minuit:
    """A Minuit on ``objective`` with limits ``[lo, hi]``, minimised by MIGRAD from ``start``.

    ``errordef`` is that of a negative log-likelihood (0.5), so HESSE's covariance is the inverse Hessian of the NLL.
    Strategy 1 (MINUIT's default) checks the gradient against finite differences and refines the Hessian on the
    way; strategy 0 trusts the gradient (half the NLL calls). Raises :class:`FitStopped` if the objective does.
    """
    m = Minuit(objective, start.numpy().copy(), grad=objective.grad, name=list(names))
    m.errordef = Minuit.LIKELIHOOD
    m.limits = list(zip(lo.tolist(), hi.tolist()))
    m.errors = (0.05 * (hi - lo)).tolist()  # first steps: a twentieth of each range
    m.tol = tol
    m.strategy = strategy
    m.migrad(ncall=ncall)
    return m


def hesse_holding(m: Minuit, objective: Objective, names: Sequence[str]) -> Minuit:
    """HESSE at the minimum that ``m`` found on ``objective``, with ``names`` held fixed there, on a new Minuit:
    ``m`` keeps its own state (holding parameters rewrites MINUIT's summary of the minimum, its EDM and validity
    among it)."""
    h = Minuit(objective, np.asarray(m.values), grad=objective.grad, name=list(m.parameters))
    h.errordef = m.errordef
    h.limits = [tuple(lim) for lim in m.limits]
    h.errors = np.asarray(m.errors)
    h.strategy = m.strategy.strategy
    for name in names:
        h.fixed[name] = True
    h.hesse()
    return h


def hesse_covariance(m: Minuit) -> tuple[np.ndarray | None, str]:
    """HESSE's covariance of ``m`` (zero rows for fixed parameters), or None and why it is not one to use."""
    fmin = m.fmin
    if fmin is None or m.covariance is None or fmin.hesse_failed:
        return None, "failed"
    if fmin.has_made_posdef_covar:
        return None, "had to force it positive definite"
    cov = np.asarray(m.covariance, dtype=np.float64)
    if not np.isfinite(cov).all():
        return None, "gave a non-finite covariance"
    return cov, ""


def near_a_bound(m: Minuit, sigmas: float = MINOS_SIGMAS) -> list[str]:
    """Parameters whose estimate lies within ``sigmas`` HESSE errors of one of its limits."""
    out = []
    for p in m.params:
        lower, upper = p.lower_limit, p.upper_limit
        if min(p.value - lower, upper - p.value) < sigmas * p.error:
            out.append(p.name)
    return out


@dataclass
class MinosInterval:
    """MINOS errors per parameter, ``(P, 2)`` (lower ≤ 0, upper; NaN where MINOS did not run), and which ones
    reached a limit or failed."""

    errors: np.ndarray
    at_limit: np.ndarray
    invalid: list[str] = field(default_factory=list)


def minos(m: Minuit, names: Sequence[str]) -> MinosInterval:
    """MINOS for ``names`` on the minimum of ``m`` (after HESSE)."""
    n = len(m.parameters)
    out = MinosInterval(np.full((n, 2), np.nan), np.zeros(n, dtype=bool))
    if not names:
        return out
    try:
        m.minos(*names)
    except RuntimeError as e:  # e.g. an invalid minimum: MINOS refuses to start
        out.invalid = [f"{', '.join(names)} ({e})"]
        return out
    for name in names:
        me = m.merrors[name]
        k = m.parameters.index(name)
        out.errors[k] = (me.lower, me.upper)
        out.at_limit[k] = bool(me.at_lower_limit or me.at_upper_limit)
        if not me.is_valid:
            out.invalid.append(name)
    return out


def at_bound(
    theta: np.ndarray, lo: np.ndarray, hi: np.ndarray, minos_at_limit: np.ndarray, errors: np.ndarray | None = None
) -> np.ndarray:
    """Per parameter: the estimate within :data:`BOUND_FRACTION` of its range from a limit, or its MINOS interval
    reaching one, or (with HESSE's ``errors``) within half an error of one: iminuit's own test for a minimum with
    parameters at a limit (``FMin.has_parameters_at_limit``), here parameter by parameter."""
    distance = np.minimum(theta - lo, hi - theta)
    flags = (distance <= BOUND_FRACTION * (hi - lo)) | minos_at_limit
    if errors is not None:
        flags |= distance < 0.5 * np.nan_to_num(errors, nan=0.0)
    return flags
