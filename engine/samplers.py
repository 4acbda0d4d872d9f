"""Differentiable inverse-transform sampling of densities tabulated on a grid.

The events' positions are smooth functions of the density values, so gradients flow from the
events back to the parameters that produced the density (the reparameterisation trick for a
tabulated density).

Known biases: the density is integrated with the trapezoid rule and taken as constant inside a
grid cell when the CDF is inverted, so features narrower than a cell are smeared out; with the
default 512 cells on [0.1, 1] the relative error of the sampled CDF is below 1e-4 for proxy1d.
The cell index is chosen without a gradient (it is piecewise constant in θ), which is exact
because the inverse is continuous across cell edges.

References:
    LOITS — local orthogonal inverse transform sampling for differentiable event generation,
    arXiv:2507.15768.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cumulative_trapezoid", "sample_inverse_cdf"]


def cumulative_trapezoid(density: Tensor, grid: Tensor) -> Tensor:
    """Running integral of ``density (..., G)`` over ``grid (G,)``, starting at 0: ``(..., G)``."""
    widths = grid[1:] - grid[:-1]
    cells = 0.5 * (density[..., 1:] + density[..., :-1]) * widths
    zero = torch.zeros_like(density[..., :1])
    return torch.cat([zero, torch.cumsum(cells, dim=-1)], dim=-1)


def sample_inverse_cdf(density: Tensor, grid: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """Events from densities tabulated on a grid, differentiable w.r.t. the density values.

    Arguments:
        density: non-negative density values, shape ``(B, G)`` (one density per batch row; need
            not be normalised).
        grid: increasing points, shape ``(G,)``.
        uniforms: uniform numbers in [0, 1), shape ``(B, N)``.

    Returns:
        ``(events, integral)``: events of shape ``(B, N)`` and the integral of each density over
        the grid, shape ``(B,)``.
    """
    cdf = cumulative_trapezoid(density, grid)
    integral = cdf[:, -1]
    cdf = cdf / integral[:, None]
    # Index of the cell holding each uniform: cdf[i-1] <= u < cdf[i]. Chosen without gradient.
    upper = torch.searchsorted(cdf.detach(), uniforms, right=True).clamp_(1, grid.shape[0] - 1)
    c0 = torch.gather(cdf, 1, upper - 1)
    c1 = torch.gather(cdf, 1, upper)
    x0 = grid[upper - 1]
    x1 = grid[upper]
    frac = (uniforms - c0) / torch.clamp(c1 - c0, min=torch.finfo(cdf.dtype).tiny)
    return x0 + frac * (x1 - x0), integral
