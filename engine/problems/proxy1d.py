"""``proxy1d``: the SAGIPS 1D demonstrator (two QCFs u, d; observables σ1 = 4u + d, σ2 = 4d + u).

References:
    Lersch et al., "Stochastic gradient-based inverse problem solver ... (SAGIPS)",
    Mach. Learn.: Sci. Technol. 6 (2025) 025017, arXiv:2407.00051.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qcf_studio.engine.problem_catalog import PROXY1D
from qcf_studio.engine.problems import register_problem
from qcf_studio.engine.problems.base import Problem

# (1 - x) is clamped so that x = 1 gives a finite log and finite gradients w.r.t. the exponents.
_TINY = 1e-12


def beta_shape(norm: Tensor, a: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``norm * x**a * (1 - x)**b`` for batched parameters ``(B,)`` on points ``(G,)`` → ``(B, G)``."""
    log_x = torch.log(x)
    log_1mx = torch.log(torch.clamp(1.0 - x, min=_TINY))
    return norm[:, None] * torch.exp(a[:, None] * log_x + b[:, None] * log_1mx)


@register_problem
class Proxy1D(Problem, info=PROXY1D):
    def qcfs(self, theta: Tensor, *grids: Tensor) -> Tensor:
        (x,) = grids
        u = beta_shape(theta[:, 0], theta[:, 1], theta[:, 2], x)
        d = beta_shape(theta[:, 3], theta[:, 4], theta[:, 5], x)
        return torch.stack([u, d], dim=1)

    def observables(self, theta: Tensor, *grids: Tensor) -> Tensor:
        q = self.qcfs(theta, *grids)
        u, d = q[:, 0], q[:, 1]
        return torch.stack([4.0 * u + d, 4.0 * d + u], dim=1)
