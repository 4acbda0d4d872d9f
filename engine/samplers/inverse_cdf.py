"""1D sampling: piecewise-linear inversion of the trapezoid CDF of densities tabulated on a grid,
differentiable w.r.t. the density values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from qcf_studio.engine.samplers.cellsearch import _locate
from qcf_studio.engine.samplers.grids import cumulative_trapezoid

__all__ = ["sample_inverse_cdf"]


def sample_inverse_cdf(density: Tensor, grid: Tensor, uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """Events from densities tabulated on a grid, differentiable w.r.t. the density values.

    The CDF is the trapezoid running integral, inverted piecewise linearly (the density is taken
    as constant inside a cell). The map from a uniform to its event is continuous across cell
    edges, so the gradient of each event is exact for the sampled distribution.

    Arguments:
        density: non-negative density values, shape ``(B, G)`` (one density per batch row; need
            not be normalised).
        grid: increasing points, shape ``(G,)``.
        uniforms: uniform numbers in [0, 1), shape ``(B, N)``.

    Returns:
        ``(events, integral)``: events of shape ``(B, N)`` inside ``[grid[0], grid[-1]]`` and the
        integral of each density over the grid, shape ``(B,)``.
    """
    cdf = cumulative_trapezoid(density, grid)
    integral = cdf[:, -1]
    cdf = cdf / integral[:, None]
    # Inside cell k, x = offset[k] + u * slope[k]: two gathers per event, and the backward pass is
    # two scatter-adds into (B, G) tables. One padding column keeps the tables' rows G wide.
    slope = (grid[1:] - grid[:-1]) / (cdf[:, 1:] - cdf[:, :-1]).clamp(min=torch.finfo(cdf.dtype).tiny)
    offset = grid[:-1] - cdf[:, :-1] * slope
    slope, offset = F.pad(slope, (0, 1)).view(-1), F.pad(offset, (0, 1)).view(-1)

    cum = cdf.detach().clone()
    cum[:, -1] = math.inf
    cell = _locate(cum, uniforms)
    events = _CellAffine.apply(offset, slope, uniforms.reshape(-1), cell, (grid[0], grid[-1]))
    return events.view(uniforms.shape), integral


class _CellAffine(torch.autograd.Function):
    """``x = offset[cell] + u * slope[cell]``, clamped to ``bounds``; the backward pass is two
    scatter-adds into the per-cell tables (cheaper than autograd's gathers + index_adds).

    offset + u * slope cancels badly in cells of almost no probability, hence the clamp (which
    the backward pass ignores: those events keep the gradient of their cell's map).
    """

    @staticmethod
    def forward(ctx, offset: Tensor, slope: Tensor, u: Tensor, cell: Tensor, bounds: tuple[Tensor, Tensor]) -> Tensor:
        ctx.save_for_backward(slope, u, cell)
        return torch.addcmul(offset.index_select(0, cell), u, slope.index_select(0, cell)).clamp_(*bounds)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        slope, u, cell = ctx.saved_tensors
        need_offset, need_slope, need_u = ctx.needs_input_grad[:3]
        grad_offset = grad.new_zeros(slope.shape).scatter_add_(0, cell, grad) if need_offset else None
        grad_slope = grad.new_zeros(slope.shape).scatter_add_(0, cell, grad * u) if need_slope else None
        grad_u = grad * slope.index_select(0, cell) if need_u else None
        return grad_offset, grad_slope, grad_u, None, None
