"""``gauss6``: six Gaussian data sets y_k ~ N(c_k · p, 1) with two parameters (a fast toy for tests).

The events are drawn exactly (reparameterised Gaussians), not from a tabulated density, and the
likelihood is analytic. The reported QCFs are the six data sets' densities.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qcf_studio.engine.problem_catalog import GAUSS6
from qcf_studio.engine.problems import register_problem
from qcf_studio.engine.problems.base import Problem

COEFFS = ((1.0, 1.0), (-2.0, 2.0), (-9.46, 1.67), (4.20, 0.74), (0.921, 1.98), (-1.10, 1.90))


@register_problem
class Gauss6(Problem, info=GAUSS6):
    def means(self, theta: Tensor) -> Tensor:
        """``c_k · p`` for each parameter set: ``(B, 6)``."""
        return theta @ torch.tensor(COEFFS, dtype=theta.dtype, device=theta.device).T

    def qcfs(self, theta: Tensor, *grids: Tensor) -> Tensor:
        (x,) = grids
        z = x[None, None, :] - self.means(theta)[:, :, None]
        return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    def observables(self, theta: Tensor, *grids: Tensor) -> Tensor:
        return self.qcfs(theta, *grids)

    def simulate(
        self, theta: Tensor, n: int, generator: torch.Generator | None, grids: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        mean = self.means(theta)
        noise = torch.randn((*mean.shape, n), generator=generator, dtype=theta.dtype, device=theta.device)
        return (mean[:, :, None] + noise)[..., None], torch.ones_like(mean)

    def log_density(self, theta: Tensor, events: Tensor) -> Tensor:
        z = events[None, ..., 0] - self.means(theta)[:, :, None]
        return -0.5 * z * z - 0.5 * math.log(2 * math.pi)
