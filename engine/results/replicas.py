"""Replicas of a run's QCFs whose spread is the run's own error: what a replica grid (``export --format grid``)
holds, in the way NNPDF-style Monte Carlo PDF sets hold their replicas.

Which replicas reproduce a run's error depends on how the run defines it
(:func:`qcf_studio.engine.results.ensemble_estimate`):

- a **bootstrap** ensemble (``uncertainty: bootstrap``): σ is the spread of the members' estimates times
  ``sqrt(1 + 1/n)``, so the replicas are the members, one each (their ``qcf_pred``), each one's distance from their
  mean widened by that factor;
- otherwise (GAN generators, a likelihood fit): σ² is the mean of each member's own variance plus the variance
  between members, which is the variance of the members' parameter distributions pooled. The replicas are the
  QCFs at the ``params_draws`` of every member (100 draws each of the generator's distribution, or of a likelihood
  fit's N(θ̂, H⁻¹)), the same number from each member, at most :data:`MAX_REPLICAS` in all.

A run that has neither (one bootstrap member; a file without ``params_draws``, e.g. a likelihood fit whose HESSE
failed) has no replicas: :class:`NoReplicasError` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from qcf_studio.engine.problems import Problem, get_problem

__all__ = ["MAX_REPLICAS", "NoReplicasError", "Replicas", "qcf_replicas", "replicas_refusal"]

MAX_REPLICAS = 1000  # as the largest Monte Carlo PDF sets; an ensemble's draws are thinned evenly to fit


class NoReplicasError(ValueError):
    """A run whose error no set of replicas reproduces; the message names the run and why."""


@dataclass(frozen=True)
class Replicas:
    """Replicas 1..N of a run (no central member): ``qcf`` (replica, qcf, x[, y]), ``params`` (replica, param),
    ``source`` (``members`` or ``draws``) and ``description``, a sentence on what they are."""

    qcf: np.ndarray
    params: np.ndarray
    source: str
    description: str


def _fitted(ds: xr.Dataset) -> np.ndarray:
    """Members whose estimates are finite (a failed member's are NaN)."""
    pred = ds["qcf_pred"].values.reshape(ds.sizes["member"], -1)
    return np.isfinite(pred).all(1) & np.isfinite(ds["params_pred"].values).all(1)


def _bootstrap_fitted(ds: xr.Dataset, label: str) -> np.ndarray:
    """The fitted members of a bootstrap ensemble (at least two), or :class:`NoReplicasError`."""
    ok = _fitted(ds)
    if int(ok.sum()) < 2:
        raise NoReplicasError(
            f"{label}: a bootstrap ensemble with {int(ok.sum())} fitted member(s) has no spread to make replicas of "
            "(ensemble.members ≥ 2)"
        )
    return ok


def _draws(ds: xr.Dataset, label: str) -> np.ndarray:
    """The finite parameter draws of the fitted members, as many from each, at most :data:`MAX_REPLICAS` in all
    (at least two), or :class:`NoReplicasError`."""
    draws = ds.get("params_draws")
    if draws is None or draws.dims != ("member", "draw", "param") or not np.issubdtype(draws.dtype, np.number):
        raise NoReplicasError(
            f"{label}: its error is each member's parameter distribution (the GAN generator's, or the likelihood "
            "fit's Hessian), and the file holds no draws of it (params_draws); a bootstrap ensemble "
            "(ensemble.bootstrap: true, members ≥ 2) gives replicas without them"
        )
    theta = draws.values[_fitted(ds)].astype(np.float64)  # (members, draws, param)
    theta = theta[:, : max(1, MAX_REPLICAS // max(1, len(theta)))].reshape(-1, ds.sizes["param"])
    theta = theta[np.isfinite(theta).all(1)]
    if len(theta) < 2:
        raise NoReplicasError(f"{label}: fewer than two finite parameter draws (params_draws) to make replicas of")
    return theta


def replicas_refusal(ds: xr.Dataset, label: str) -> str | None:
    """Why the run ``ds`` has no replicas (:class:`NoReplicasError`'s message), or None when it has: the checks of
    :func:`qcf_replicas` without computing a QCF (what the dashboard asks before it offers a download)."""
    try:
        if ds.attrs.get("uncertainty") == "bootstrap":
            _bootstrap_fitted(ds, label)
        else:
            _draws(ds, label)
        _problem_of(ds, label)
    except NoReplicasError as e:
        return str(e)
    return None


def qcf_replicas(ds: xr.Dataset, label: str) -> Replicas:
    """The replicas of the run ``ds`` (see the module's docstring); ``label`` names it in errors.

    Raises :class:`NoReplicasError` when the run has none.
    """
    if ds.attrs.get("uncertainty") == "bootstrap":
        ok = _bootstrap_fitted(ds, label)
        n_ok = int(ok.sum())
        widen = np.sqrt(1.0 + 1.0 / n_ok)  # the error of the members' mean (ensemble_estimate)
        qcf, params = (ds[v].values[ok].astype(np.float64) for v in ("qcf_pred", "params_pred"))
        return Replicas(
            qcf=qcf.mean(0) + widen * (qcf - qcf.mean(0)),
            params=params.mean(0) + widen * (params - params.mean(0)),
            source="members",
            description=f"one replica per bootstrap member ({n_ok} members fitted to bootstrap replicas of the "
            f"data), its distance from their mean widened by sqrt(1 + 1/{n_ok}): their spread is the run's error",
        )
    theta = _draws(ds, label)
    q = _qcfs_at(ds, theta, label)
    return Replicas(
        qcf=q,
        params=theta,
        source="draws",
        description=f"QCFs at {len(theta)} draws of the {int(_fitted(ds).sum())} fitted member(s)' parameter "
        "distributions (as many from each): their spread is the run's error",
    )


def _problem_of(ds: xr.Dataset, label: str) -> Problem:
    """The run's problem, when the file's QCFs and parameters are its own; :class:`NoReplicasError` otherwise."""
    problem = get_problem(str(ds.attrs["problem"]))  # registered: check_results refused the file otherwise
    if list(map(str, ds["qcf"].values)) != list(problem.qcf_names) or ds.sizes["param"] != len(problem.param_names):
        raise NoReplicasError(f"{label}: its QCFs or parameters are not those of problem {problem.kind}")
    return problem


def _qcfs_at(ds: xr.Dataset, theta: np.ndarray, label: str) -> np.ndarray:
    """The problem's QCFs at each row of ``theta`` on the file's grid: (replica, qcf, x[, y])."""
    problem = _problem_of(ds, label)
    dims = [d for d in ds["qcf_pred"].dims if d not in ("member", "qcf")]
    grids = [torch.tensor(np.array(ds[d].values, dtype=np.float64)) for d in dims]  # (a copy: writable)
    with torch.no_grad():
        return problem.qcfs(torch.as_tensor(theta), *grids).numpy()
