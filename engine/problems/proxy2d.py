"""``proxy2d`` and ``multiset2d``: 2D densities ρ(x, y) = x^p0 (1−x)^p1 y^p2 (1−y)^p3 (1 + p4 x y).

``proxy2d`` measures ρ itself. ``multiset2d`` measures four data sets, each a mixture of three
such densities (A, B, C; normalised before mixing) with a fixed mixing matrix, and fits all
fifteen parameters at once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qcf_studio.engine.problem_catalog import MULTISET2D, PROXY2D
from qcf_studio.engine.problems import register_problem
from qcf_studio.engine.problems.base import Problem

_TINY = 1e-12
MIXING = ((0.78, 0.11, 0.11), (0.175, 0.65, 0.175), (0.065, 0.065, 0.87), (0.38, 0.31, 0.31))


def rho2d(p: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``ρ(x, y)`` for parameters ``p (B, 5)`` on the grid ``x (Gx,) × y (Gy,)``: ``(B, Gx, Gy)``."""
    lx, l1x = torch.log(x), torch.log(torch.clamp(1.0 - x, min=_TINY))
    ly, l1y = torch.log(y), torch.log(torch.clamp(1.0 - y, min=_TINY))
    fx = torch.exp(p[:, 0:1] * lx + p[:, 1:2] * l1x)  # (B, Gx)
    fy = torch.exp(p[:, 2:3] * ly + p[:, 3:4] * l1y)  # (B, Gy)
    coupling = 1.0 + p[:, 4, None, None] * (x[:, None] * y[None, :])
    return fx[:, :, None] * fy[:, None, :] * coupling


@register_problem
class Proxy2D(Problem, info=PROXY2D):
    def qcfs(self, theta: Tensor, *grids: Tensor) -> Tensor:
        return rho2d(theta, *grids)[:, None]

    def observables(self, theta: Tensor, *grids: Tensor) -> Tensor:
        return self.qcfs(theta, *grids)


@register_problem
class MultiSet2D(Problem, info=MULTISET2D):
    mixing = MIXING

    def qcfs(self, theta: Tensor, *grids: Tensor) -> Tensor:
        return torch.stack([rho2d(theta[:, 5 * k : 5 * k + 5], *grids) for k in range(3)], dim=1)

    def observables(self, theta: Tensor, *grids: Tensor) -> Tensor:
        x, y = grids
        q = self.qcfs(theta, x, y)  # (B, 3, Gx, Gy)
        norm = torch.trapezoid(torch.trapezoid(q, y, dim=-1), x, dim=-1)  # (B, 3)
        m = torch.tensor(self.mixing, dtype=q.dtype, device=q.device)  # (4, 3)
        return torch.einsum("jk,bkxy->bjxy", m, q / norm[:, :, None, None])
