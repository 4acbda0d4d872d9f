"""2D sampling by LOITS (local orthogonal inverse-transform sampling, arXiv:2507.15768): cell allocation,
then x and y from the local CDFs of the bilinear interpolant, with the local or the transport (implicit
reparameterisation) gradient."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from qcf_studio.engine.samplers.cellsearch import _locate
from qcf_studio.engine.samplers.grids import cumulative_trapezoid

__all__ = ["sample_loits_2d"]


def _linear_inverse(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Inverse CDF on [0, 1] of the density ∝ a + (b - a) s at probability u (stable form)."""
    tiny = torch.finfo(u.dtype).tiny
    if a.requires_grad or b.requires_grad:
        root = torch.sqrt(torch.lerp(a * a, b * b, u))
        return (u * (a + b) / (a + root).clamp(min=tiny)).clamp(0.0, 1.0)
    root = torch.lerp(a * a, b * b, u).sqrt_()  # in place: fewer passes over memory
    return (a + b).mul_(u).div_(root.add_(a).clamp_(min=tiny)).clamp_(0.0, 1.0)


def sample_loits_2d(
    density: Tensor, grid_x: Tensor, grid_y: Tensor, uniforms: Tensor, *, gradient: str = "transport"
) -> tuple[Tensor, Tensor]:
    """2D events by LOITS (local orthogonal inverse-transform sampling), differentiable.

    The sampled distribution is the bilinear interpolant of the tabulated density:

    1. allocation: ``uniforms[..., 0]`` picks a cell from its (trapezoid) mass, by a search on
       the cumulative cell masses, without gradient;
    2. x inside the cell from ``uniforms[..., 1]`` by inverting the cell's x-marginal, which is
       linear in x (closed-form quadratic inverse);
    3. y inside the cell from ``uniforms[..., 2]`` by inverting the conditional at that x, which
       is linear in y.

    So there is no within-cell independence bias; the grid-resolution bias is that of bilinear
    interpolation (see :mod:`qcf_studio.engine.samplers` for measured sizes).

    Arguments:
        density: non-negative values ``(B, Gx, Gy)`` on the grid ``grid_x (Gx,) × grid_y (Gy,)``.
        grid_x, grid_y: increasing points.
        uniforms: uniform numbers in [0, 1), shape ``(B, N, 3)``.
        gradient: ``"transport"`` (default): implicit reparameterisation through the marginal
            CDF of x and the conditional CDF of y given x; its expectation is the exact
            derivative of expectations under the sampled distribution. ``"local"``: the
            derivative of the LOITS map itself with the allocation held fixed (what
            finite differences of the events see); it misses the flow of events between cells
            and is strongly biased on fine grids.

    Returns:
        ``(events, integral)``: events ``(B, N, 2)`` on the grid's rectangle and the 2D
        trapezoid integral of each density, ``(B,)``.
    """
    if gradient not in ("transport", "local"):
        raise ValueError(f"gradient must be 'transport' or 'local', not {gradient!r}")
    rows, nx, ny = density.shape
    n = uniforms.shape[1]
    hx, hy = grid_x[1:] - grid_x[:-1], grid_y[1:] - grid_y[:-1]

    # Running integrals along y at every x node, G (B, Gx, Gy); the line integrals L_i = G[:, i, -1],
    # their running integral C along x, and the total Z. With the transport gradient they are built
    # without autograd: _Transport's backward takes its derivatives through them itself.
    with torch.set_grad_enabled(gradient == "local" and torch.is_grad_enabled()):
        col_cum = cumulative_trapezoid(density, grid_y)
        line_cum = cumulative_trapezoid(col_cum[..., -1], grid_x)
        integral = line_cum[:, -1]

    with torch.no_grad():
        # Allocation. Cell (i, j) sits at its lower-left corner's flat index r*Gx*Gy + i*Gy + j,
        # and its lower edge in the cumulative cell masses is C_i + hx_i (G_ij + G_i+1,j) / 2; the
        # cells (i, Gy - 1) are empty padding, and nothing may follow the last cell (Gx-2, Gy-2).
        g = col_cum.detach()
        cum = (g[:, 1:] + g[:, :-1]).mul_(0.5 * hx[:, None]).add_(line_cum.detach()[:, :-1, None])
        cum = F.pad(cum.div_(integral.detach()[:, None, None]), (0, 0, 0, 1)).view(rows, -1)
        cum[:, (nx - 1) * ny - 1 :] = math.inf
        u0, u1, u2 = uniforms.permute(2, 0, 1).contiguous()  # one pass instead of three strided
        cell = _locate(cum, u0)
        column = torch.div(cell, ny, rounding_mode="floor")  # r*Gx + i
        x0 = grid_x.repeat(rows).index_select(0, column)
        hx_e = F.pad(hx, (0, 1)).repeat(rows).index_select(0, column)
        row = cell - column * ny  # j
        y0, hy_e = grid_y.index_select(0, row), F.pad(hy, (0, 1)).index_select(0, row)

    flat = density.reshape(-1) if gradient == "local" else density.detach().reshape(-1)
    f00, f01, f10, f11 = (flat[shift:].index_select(0, cell) for shift in (0, 1, ny, ny + 1))
    s = _linear_inverse(u1.view(-1), f00 + f01, f10 + f11)
    g0, g1 = torch.lerp(f00, f10, s), torch.lerp(f01, f11, s)  # f(x, y_j), f(x, y_j+1)
    t = _linear_inverse(u2.view(-1), g0, g1)
    dx, dy = s * hx_e, t * hy_e
    if gradient == "local":
        events = torch.stack([x0 + dx, y0 + dy], -1)
    else:
        c = _Cell(cell, column, s, t, dx, dy, hx_e, hy_e, f00, f01, f10, f11, g0, g1)
        events, integral = _Transport.apply(density, (line_cum, col_cum, integral, hx, hy), c, x0, y0)
    return events.view(rows, n, 2), integral


@dataclass
class _Cell:
    """Per-event data of a LOITS draw (detached): indices of the cell and of its x node, local
    coordinates (s, t) in the cell and their offsets (dx, dy) = (s hx, t hy), the cell's sizes,
    its corner values and f(x, y_j), f(x, y_j+1) at the event's x."""

    cell: Tensor
    column: Tensor
    s: Tensor
    t: Tensor
    dx: Tensor
    dy: Tensor
    hx: Tensor
    hy: Tensor
    f00: Tensor
    f01: Tensor
    f10: Tensor
    f11: Tensor
    g0: Tensor
    g1: Tensor


class _Transport(torch.autograd.Function):
    """LOITS events whose gradient is the implicit reparameterisation (transport) gradient.

    For fixed quantiles q1 = F_X(x), q2 = F(y | x) the events move with θ as
    dx/dθ = −∂θF_X(x) / p_X(x) and dy/dθ = −(∂θF(y | x) + ∂xF(y | x) dx/dθ) / p(y | x), where, for
    the bilinear interpolant and an event at (s, t) in cell (i, j),
    Z F_X(x) = C_i + hx s lerp(L_i, L_i+1, s/2),  Z p_X(x) = ℓ = lerp(L_i, L_i+1, s),
    F(y | x) = lerp(G_i(y), G_i+1(y), s) / ℓ,  G_i(y) = G_ij + hy t lerp(f_ij, f_i,j+1, t/2).
    The forward pass just assembles the events (and passes the integral Z on); the backward pass
    scatters these derivatives into the tables C, G (and so L = G[..., -1]), the corner values f
    and Z, and takes them back through the running trapezoid integrals to the density: one node
    of the autograd graph instead of some forty for the tables' slices, sums and products.
    """

    @staticmethod
    def forward(
        ctx, density: Tensor, tables: tuple[Tensor, ...], c: _Cell, x0: Tensor, y0: Tensor
    ) -> tuple[Tensor, Tensor]:
        ctx.tables = tables
        ctx.cell_data = c
        events = x0.new_empty((x0.shape[0], 2))
        torch.add(x0, c.dx, out=events[:, 0])
        torch.add(y0, c.dy, out=events[:, 1])
        return events, tables[2].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor, grad_z: Tensor) -> tuple[Tensor | None, ...]:
        line_cum, col_cum, integral, hx_grid, hy_grid = ctx.tables
        c: _Cell = ctx.cell_data
        rows, nx, ny = col_cum.shape
        s, t, hx = c.s, c.t, c.hx
        cols = col_cum.view(-1)
        lines = col_cum[..., -1].reshape(-1)
        l_i, l_i1 = lines.index_select(0, c.column), lines[1:].index_select(0, c.column)
        c_i = line_cum.view(-1).index_select(0, c.column)
        g_i, g_i1 = cols.index_select(0, c.cell), cols[ny:].index_select(0, c.cell)

        # The event's distribution functions: Z F_X(x) and F(y | x).
        half_s, half_t = 0.5 * s, 0.5 * t
        ell = torch.lerp(l_i, l_i1, s).clamp_(min=torch.finfo(s.dtype).tiny)
        cdf_x = torch.addcmul(c_i, c.dx, torch.lerp(l_i, l_i1, half_s))
        lower = torch.addcmul(g_i, c.dy, torch.lerp(c.f00, c.f01, half_t))
        upper = torch.addcmul(g_i1, c.dy, torch.lerp(c.f10, c.f11, half_t))
        cdf_y = torch.lerp(lower, upper, s).div_(ell)  # F(y | x)

        # gamma = gy / f(x, y) and beta weigh the motions of y and x: an event exactly where the
        # density vanishes (u = 0 on a zero edge) has no finite velocity and gets none.
        gamma = torch.lerp(c.g0, c.g1, t).reciprocal_().nan_to_num_(0.0, 0.0, 0.0).mul_(grad[:, 1])
        slope = torch.addcmul(upper.sub_(lower), cdf_y, l_i1 - l_i, value=-1).div_(hx)  # ℓ ∂F(y | x)/∂x
        beta = torch.addcmul(grad[:, 0], gamma, slope, value=-1).div_(ell)

        # x's share: −beta δ(C_i + hx s lerp(L_i, L_i+1, s/2)) + beta F_X δZ; y's share:
        # −gamma δ(lerp(G_i(y), G_i+1(y), s)) + gamma F(y | x) δ(lerp(L_i, L_i+1, s)); the G and f
        # terms are scattered with a positive sign and their tables negated afterwards.
        grad_integral = torch.linalg.vecdot(beta.view(rows, -1), cdf_x.view(rows, -1)).div_(integral).add_(grad_z)
        w1 = s * half_s
        beta_hx = beta * hx
        gamma_f = gamma * cdf_y
        gamma_f_s = gamma_f * s
        grad_line_cum = torch.zeros_like(lines).scatter_add_(0, c.column, beta).neg_()
        grad_line_cum.view(rows, nx)[:, -1] += grad_integral  # Z = C[:, -1]
        grad_line = torch.zeros_like(lines)
        grad_line.scatter_add_(0, c.column, torch.addcmul(gamma_f.sub_(gamma_f_s), beta_hx, s - w1, value=-1))
        grad_line[1:].scatter_add_(0, c.column, torch.addcmul(gamma_f_s, beta_hx, w1, value=-1))
        gamma_s = gamma * s
        gamma_1s = gamma.sub_(gamma_s)
        grad_cols = torch.zeros_like(cols)
        grad_cols.scatter_add_(0, c.cell, gamma_1s)
        grad_cols[ny:].scatter_add_(0, c.cell, gamma_s)
        grad_cols.neg_()
        hy_v1 = c.dy * half_t  # hy t²/2
        hy_v0 = c.dy - hy_v1  # hy (t − t²/2)
        grad_f = torch.zeros_like(cols)
        grad_f.scatter_add_(0, c.cell, gamma_1s * hy_v0)
        grad_f[1:].scatter_add_(0, c.cell, gamma_1s.mul_(hy_v1))
        grad_f[ny:].scatter_add_(0, c.cell, gamma_s * hy_v0)
        grad_f[ny + 1 :].scatter_add_(0, c.cell, gamma_s.mul_(hy_v1))
        grad_f.neg_()

        # Back through C = cumulative_trapezoid(L) and L = G[..., -1], then G = cumulative_trapezoid(f).
        grad_line += _cumulative_trapezoid_adjoint(grad_line_cum.view(rows, nx), hx_grid).view(-1)
        grad_cols = grad_cols.view(rows, nx, ny)
        grad_cols[..., -1] += grad_line.view(rows, nx)
        grad_density = grad_f.view(rows, nx, ny).add_(_cumulative_trapezoid_adjoint(grad_cols, hy_grid))
        return grad_density, None, None, None, None


def _cumulative_trapezoid_adjoint(grad_out: Tensor, h: Tensor) -> Tensor:
    """The gradient w.r.t. ``f (..., G)`` of ``Σ grad_out · cumulative_trapezoid(f)`` along the last
    dimension, for cell widths ``h (G - 1,)``.

    Cell k, between points k and k + 1, adds h_k (f_k + f_k+1) / 2 to every running integral from
    point k + 1 on; so f_k and f_k+1 each receive h_k / 2 times the sum of ``grad_out`` from k + 1 on.
    """
    tail = torch.cumsum(grad_out[..., 1:].flip(-1), -1).flip(-1).mul_(0.5 * h)  # (..., G - 1)
    out = torch.zeros_like(grad_out)
    out[..., :-1] = tail
    out[..., 1:] += tail
    return out
