"""How far a tabulation grid moves the fit: the pseudo-true parameter shift of the sampled density.

The training sampler draws from an interpolant of the density tabulated on a grid (constant inside
a 1D cell, bilinear inside a 2D cell; see :mod:`qcf_studio.engine.samplers`), not from the density itself. A
perfect fit to data from the exact density therefore lands, for large samples, where the sampled
distribution's expected score vanishes: at θ* with

    Δθ = θ* − θ ≈ I⁻¹ Σ_o (E_sampled,o[∇θ log ρ_o] − E_exact,o[∇θ log ρ_o]),

``I`` the Fisher information per event summed over observables. :func:`parameter_shift` returns
Δθ in units of the statistical error of ``events`` events per observable, so a value near 1 means
the grid alone moves the answer by one standard error. Use it to choose ``grid_points`` and
``grid_spacing`` for a new problem (seconds on a CPU).

Both expectations are trapezoid sums on one fine grid per axis: a clustered grid merged with the
training grid's cells cut into pieces, so the interpolant's kinks sit on nodes. The observables
are evaluated on the whole fine grid at once (problems may normalise over the grid they are
given). Scores are central finite differences of ``log ρ``; the normalisation's derivative drops
out of the difference. Normalisation parameters (cross sections fix them) are held fixed and
get NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from qcf_studio.engine.problems import Problem
from qcf_studio.engine.samplers import clustered_grid, trapezoid_weights

__all__ = ["parameter_shift"]

_F64 = torch.float64
_STEP = 1e-5  # relative finite-difference step of the scores


def _fine_grid(grid: Tensor, fine_points: int, pieces: int) -> Tensor:
    """A clustered grid of ``fine_points`` on ``grid``'s range merged with ``grid``'s cells cut into
    ``pieces`` equal parts."""
    a, b = float(grid[0]), float(grid[-1])
    t = torch.arange(pieces, dtype=_F64) / pieces
    cut = (grid[:-1, None] + (grid[1:] - grid[:-1])[:, None] * t).reshape(-1)
    return torch.unique(torch.cat([clustered_grid(a, b, fine_points), cut, grid[-1:]]))  # sorted


def _interpolant(table: Tensor, grid: Tensor, points: Tensor, dim: int, piecewise_constant: bool) -> Tensor:
    """The training sampler's interpolant of ``table`` (tabulated on ``grid`` along ``dim``) at
    ``points``: linear between nodes, or the cell's trapezoid mean (1D sampler)."""
    cell = torch.clamp(torch.searchsorted(grid, points, right=True) - 1, 0, grid.shape[0] - 2)
    s = (points - grid[cell]) / (grid[cell + 1] - grid[cell])
    if piecewise_constant:
        # Inside a cell its mean; on an interior node the node's value (between the two cells' means;
        # the jump there costs O(fine step) in the trapezoid sums).
        s = torch.where(torch.isin(points, grid[1:-1]), s, torch.full_like(s, 0.5))
    lo, hi = table.index_select(dim, cell), table.index_select(dim, cell + 1)
    shape = [1] * table.dim()
    shape[dim] = -1
    return torch.lerp(lo, hi, s.view(shape))


def parameter_shift(
    problem: Problem,
    grids: tuple[Tensor, ...],
    theta: Tensor | None = None,
    events: int = 100_000,
    fine_points: int = 401,
    pieces: int = 6,
) -> np.ndarray:
    """Pseudo-true shift of the parameters by sampling on ``grids``, in standard errors of
    ``events`` events per observable, ``(P,)``, at ``theta`` (the problem's truth if ``None``).

    Arguments:
        problem: a 1D or 2D problem; its :meth:`~qcf_studio.engine.problems.Problem.observables` are
            evaluated in float64.
        grids: the tabulation grids, as from :meth:`~qcf_studio.engine.problems.Problem.tabulation_grids`.
        theta: parameters ``(P,)``.
        events: events per observable that set the statistical error.
        fine_points: points per axis of the clustered part of the fine grid.
        pieces: parts each training cell is cut into on the fine grid.
    """
    if problem.event_dims not in (1, 2):
        raise ValueError(f"parameter_shift handles 1D and 2D problems, not {problem.event_dims}D")
    theta = problem.truth_tensor(_F64) if theta is None else torch.as_tensor(theta, dtype=_F64)
    grids = tuple(g.to(_F64) for g in grids)
    fine = tuple(_fine_grid(g, fine_points, pieces) for g in grids)
    weights = trapezoid_weights(fine[0])
    if len(fine) == 2:
        weights = weights[:, None] * trapezoid_weights(fine[1])[None, :]

    # Scores of the shape parameters, (P', O, points...): central differences of log ρ.
    shape_params = [k for k, name in enumerate(problem.param_names) if name not in problem.normalisation_params]
    scores = []
    for k in shape_params:
        step = _STEP * max(abs(float(theta[k])), 1.0)
        pair = theta.repeat(2, 1)
        pair[0, k] += step
        pair[1, k] -= step
        log = torch.log(torch.clamp(problem.observables(pair, *fine).to(_F64), min=1e-300))
        scores.append((log[0] - log[1]) / (2 * step))
    score = torch.stack(scores).flatten(2)  # (P', O, N)

    def expectation(density: Tensor) -> tuple[Tensor, Tensor]:
        w = (density * weights).flatten(1)  # (O, N)
        w = w / w.sum(-1, keepdim=True)
        mean = torch.einsum("pon,on->op", score, w)
        centred = (score - mean.t()[:, :, None]).flatten(1)  # (P', O * N)
        return mean, (centred * w.reshape(-1)) @ centred.t()

    mean_exact, fisher = expectation(problem.observables(theta[None], *fine).to(_F64)[0])
    table = problem.observables(theta[None], *grids).to(_F64)[0]  # (O, Gx[, Gy]), as the sampler sees it
    for d, (g, f) in enumerate(zip(grids, fine)):
        table = _interpolant(table, g, f, d + 1, piecewise_constant=len(grids) == 1)
    mean_sampled, _ = expectation(table)
    inverse = torch.linalg.inv(fisher)
    shift = inverse @ (mean_sampled - mean_exact).sum(0)
    sigma = torch.sqrt(torch.diagonal(inverse) / events)
    out = np.full(len(problem.param_names), np.nan)
    out[shape_params] = (shift / sigma).numpy()
    return out
