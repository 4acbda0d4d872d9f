"""The likelihood model of :class:`~qcf_studio.engine.mle.MLEFit`: the problem's densities on a grid, folded with the
resolution smearing, normalised and interpolated at the events; the negative log-likelihood."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qcf_studio.engine.problems import Problem
from qcf_studio.engine.samplers import trapezoid_weights

_F64 = torch.float64
_TINY = 1e-300


def _smeared_cdf(edges: Tensor, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``P(x (1 − R) ≤ e)`` and its complement for ``R ~ N(0, σ²)``: ``(E, G)`` each."""
    x = torch.where(x == 0, torch.full_like(x, 1e-200), x)
    ratio = edges[:, None] / x[None, :]
    arg = torch.where(x[None, :] > 0, ratio - 1.0, 1.0 - ratio) / sigma
    return torch.special.ndtr(arg), torch.special.ndtr(-arg)


def fold_matrix(truth_grid: Tensor, folded_grid: Tensor, sigma: float) -> Tensor:
    """Matrix ``M (G', G)`` with ``p'(x'_i) ≈ Σ_j M_ij p(x_j)`` for the smearing ``x' = x (1 − R)``.

    Each truth node ``x_j`` carries the mass ``w_j p(x_j)`` (trapezoid weights); the probability that
    it lands in the cell around folded node ``i`` (between midpoints; the end cells take the
    tails) is the exact Gaussian probability in ``R``, so mass is conserved and a kernel narrower
    than a cell degrades to the identity instead of aliasing. Dividing by the cell width gives the
    cell-averaged density at the node.
    """
    mid = 0.5 * (folded_grid[1:] + folded_grid[:-1])
    inf = torch.tensor([math.inf], dtype=_F64)
    edges = torch.cat([-inf, mid, inf])
    cdf, sf = _smeared_cdf(edges, truth_grid, sigma)
    # Differences of whichever tail is small, so far-tail cells keep their relative precision.
    prob = torch.where(cdf[:-1] > 0.5, sf[:-1] - sf[1:], cdf[1:] - cdf[:-1]).clamp_min(0.0)  # (G', G)
    return prob * trapezoid_weights(truth_grid)[None, :] / trapezoid_weights(folded_grid)[:, None]


class LikelihoodModel:
    """The forward model and the NLL of :class:`~qcf_studio.engine.mle.MLEFit`, which sets the attributes below."""

    problem: Problem
    resolution: float
    fold_sigmas: float
    lo: Tensor
    hi: Tensor
    events: Tensor
    n_obs: int
    n_events: int
    xsec: Tensor
    xsec_err: Tensor
    use_xsec: bool
    valid: Tensor | None
    event_w: Tensor | None
    warnings: list[str]
    truth_grids: tuple[Tensor, ...]
    analytic: bool

    # Likelihood ---------------------------------------------------------------------------------

    def _folded_grid(self, truth_grid: Tensor, coord: Tensor) -> Tensor:
        """The truth grid plus evenly spaced nodes (4 per resolution width) past both ends, far enough
        for ``fold_sigmas`` widths and for every event."""
        a, b = float(truth_grid[0]), float(truth_grid[-1])
        k = self.fold_sigmas * self.resolution
        lo = min(a - k * abs(a), float(coord.min()))
        hi = max(b + k * abs(b), float(coord.max()))
        parts = [truth_grid]
        for end, target in ((a, lo), (b, hi)):
            if target == end:
                continue
            step = max(0.25 * self.resolution * abs(end), 1e-3 * (b - a) / len(truth_grid))
            m = min(max(int(math.ceil(abs(target - end) / step)), 1), 400)  # far outliers: coarser spacing
            ext = end + (target - end) * torch.arange(1, m + 1, dtype=_F64) / m
            parts.append(ext)
        return torch.sort(torch.cat(parts)).values

    def _tabulate(self) -> None:
        """Grids, folding matrices and the events' fixed interpolation cells."""
        self.fold: list[Tensor | None] = []
        self.grids: list[Tensor] = []
        index, frac = [], []
        valid = torch.ones(self.n_obs * self.n_events, dtype=torch.bool)
        if self.valid is not None:  # unequal counts: the padding stays out of the likelihood
            valid = self.valid.reshape(-1)
        inside = valid.clone()
        for axis, tgrid in enumerate(self.truth_grids):
            coord = self.events[..., axis].reshape(-1).contiguous()
            if self.resolution > 0:
                grid = self._folded_grid(tgrid, coord)
                self.fold.append(fold_matrix(tgrid, grid, self.resolution))
            else:
                grid = tgrid
                self.fold.append(None)
            self.grids.append(grid)
            inside &= (coord >= grid[0]) & (coord <= grid[-1])
            k = (torch.searchsorted(grid, coord, right=True) - 1).clamp(0, len(grid) - 2)
            f = ((coord - grid[k]) / (grid[k + 1] - grid[k])).clamp(0.0, 1.0)
            index.append(k)
            frac.append(f)
        # Events outside the tabulated domain (only without smearing: the folded grid covers them all)
        # have zero model density; they are left out of the likelihood, with a warning.
        outside = int((valid & ~inside).sum())
        if outside:
            self.warnings.append(f"{outside} events outside the problem's domain were left out of the likelihood")
        self.inside = inside
        self.event_weight = inside.to(_F64) if outside or self.valid is not None else None
        if self.event_w is not None:  # weighted: Σ w log v − Σ w log(norm)
            self.event_weight = self.event_w.reshape(-1) * inside.to(_F64)
            self.counts = self.event_weight.reshape(self.n_obs, self.n_events).sum(1)
        else:
            self.counts = inside.reshape(self.n_obs, self.n_events).sum(1).to(_F64)
        self.weights = [trapezoid_weights(g) for g in self.grids]
        obs = torch.arange(self.n_obs).repeat_interleave(self.n_events)
        self.frac: Tensor | tuple[Tensor, Tensor]  # one axis: the fraction along it; two: along x and along y
        # the cells' corner nodes and the complements 1 − f, computed once: the NLL gathers at them every call
        # (index_select: a third of the time of indexing with a tensor)
        self.corners: tuple[Tensor, ...]
        if len(self.grids) == 1:
            base = obs * len(self.grids[0]) + index[0]
            self.frac = frac[0]
            self.corners = (base, base + 1)
        else:
            gx, gy = len(self.grids[0]), len(self.grids[1])
            base = obs * gx * gy + index[0] * gy + index[1]
            self.frac = (frac[0], frac[1])
            self.corners = (base, base + 1, base + gy, base + gy + 1)
        self.frac_rest = tuple(1.0 - f for f in frac)

    def densities(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Detector-level densities on the (folded) grid ``(O, G[, G])`` and their integrals ``(O,)``."""
        dens = self.problem.observables(theta[None], *self.truth_grids)[0]
        if len(self.grids) == 1:
            if self.fold[0] is not None:
                dens = dens @ self.fold[0].T
            return dens, dens @ self.weights[0]
        fold_x, fold_y = self.fold
        if fold_x is not None and fold_y is not None:  # both or neither (resolution > 0)
            dens = torch.matmul(torch.matmul(fold_x, dens), fold_y.T)
        return dens, torch.einsum("oij,i,j->o", dens, self.weights[0], self.weights[1])

    def _at_events(self, dens: Tensor) -> Tensor:
        """The (folded) densities ``dens`` interpolated at the events: ``(O * N,)``."""
        flat = dens.reshape(-1)
        at = [flat.index_select(0, c) for c in self.corners]
        if isinstance(self.frac, Tensor):  # one axis
            return at[0] * self.frac_rest[0] + at[1] * self.frac
        fx, fy = self.frac
        gx, gy = self.frac_rest
        return gx * (gy * at[0] + fy * at[1]) + fx * (gy * at[2] + fy * at[3])

    def _exact_log_density(self, theta: Tensor) -> Tensor:
        """The problem's exact ``log p_j(x_ji; θ)``, ``(O, N)`` (``analytic``: the problem has one; 0 on padding)."""
        log_p = self.problem.log_density(theta[None], self.events)
        if log_p is None:
            raise TypeError(f"{type(self.problem).__name__}.log_density returned None in an analytic fit")
        if self.valid is not None:  # unequal counts: the padding adds nothing
            return torch.where(self.valid, log_p[0], torch.zeros_like(log_p[0]))
        return log_p[0]

    def event_log_likelihood(self, theta: Tensor) -> Tensor:
        """``log p_j(x_ji; θ)`` of every event, ``(O, N)`` (0 for events outside the tabulated domain)."""
        if self.analytic:
            return self._exact_log_density(theta)
        dens, norm = self.densities(theta)
        log_p = torch.log(self._at_events(dens).clamp_min(_TINY)).reshape(self.n_obs, self.n_events)
        log_p = log_p - torch.log(norm.clamp_min(_TINY))[:, None]
        return torch.where(self.inside.reshape(self.n_obs, self.n_events), log_p, torch.zeros_like(log_p))

    def nll(self, theta: Tensor) -> Tensor:
        """Negative log-likelihood of the data at ``theta (P,)`` (a scalar; differentiable)."""
        if self.analytic:
            log_p = self._exact_log_density(theta)
            out = -(log_p.sum() if self.event_w is None else (self.event_w * log_p).sum())
        else:
            dens, norm = self.densities(theta)
            v = self._at_events(dens)
            log_v = torch.log(v.clamp_min(_TINY))
            if self.event_weight is not None:
                log_v = self.event_weight * log_v
            out = (self.counts * torch.log(norm.clamp_min(_TINY))).sum() - log_v.sum()
        if self.use_xsec:
            xs = self.problem.cross_sections(theta[None], self.truth_grids)[0]
            out = out + 0.5 * (((xs - self.xsec) / self.xsec_err) ** 2).sum()
        return out
