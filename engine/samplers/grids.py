"""Tabulation grids and trapezoid integration: uniform or clustered (Chebyshev–Lobatto) grids, the
trapezoid-rule weights and the running trapezoid integral the samplers invert."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qcf_studio.engine.choices import GRID_SPACINGS

__all__ = ["GRID_SPACINGS", "clustered_grid", "tabulation_grid", "trapezoid_weights", "cumulative_trapezoid"]


def clustered_grid(a: float, b: float, n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` Chebyshev–Lobatto points on ``[a, b]``: dense at both ends, where power laws live."""
    t = torch.linspace(0.0, math.pi, n, dtype=torch.float64)
    g = a + (b - a) * 0.5 * (1.0 - torch.cos(t))
    g[0], g[-1] = a, b
    return g.to(dtype)


def tabulation_grid(a: float, b: float, n: int, spacing: str = "uniform", dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` increasing points from ``a`` to ``b``, evenly spaced (``"uniform"``) or dense at both
    ends (``"clustered"``, :func:`clustered_grid`)."""
    if spacing == "uniform":
        return torch.linspace(a, b, n, dtype=dtype)
    if spacing == "clustered":
        return clustered_grid(a, b, n, dtype)
    raise ValueError(f"grid spacing must be one of {', '.join(GRID_SPACINGS)}, not {spacing!r}")


def trapezoid_weights(grid: Tensor) -> Tensor:
    """Trapezoid-rule weights on ``grid (G,)``; also the widths of the cells between midpoints."""
    d = grid[1:] - grid[:-1]
    w = torch.zeros_like(grid)
    w[:-1] += 0.5 * d
    w[1:] += 0.5 * d
    return w


def cumulative_trapezoid(density: Tensor, grid: Tensor, dim: int = -1) -> Tensor:
    """Running integral of ``density`` over ``grid (G,)`` along ``dim`` (of size G), starting at 0."""
    density = density.movedim(dim, -1)
    cells = 0.5 * (density[..., 1:] + density[..., :-1]) * (grid[1:] - grid[:-1])
    out = torch.cat([torch.zeros_like(density[..., :1]), torch.cumsum(cells, dim=-1)], dim=-1)
    return out.movedim(-1, dim)
