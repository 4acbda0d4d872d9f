"""The sampler registry: :class:`Sampler` puts every sampler behind one call, :data:`SAMPLERS` holds the
registered ones (1D inverse CDF, 2D LOITS, N-D sequential) and :func:`draw` makes the uniforms itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from qcf_studio.engine.samplers.inverse_cdf import sample_inverse_cdf
from qcf_studio.engine.samplers.loits import sample_loits_2d
from qcf_studio.engine.samplers.sequential import sample_sequential_nd

__all__ = ["Sampler", "SAMPLERS", "register_sampler", "draw"]


@dataclass(frozen=True)
class Sampler:
    """A registered sampler behind the uniform call ``sample(density, grids, uniforms)``.

    Attributes:
        name: registry key.
        dims: event dimensions it handles (1, 2, ...), or ``None`` for any.
        n_uniforms: uniforms per event for ``D`` dimensions.
        fn: ``fn(density (B, *G), grids, uniforms (B, N, n_uniforms(D)))`` →
            ``(events (B, N, D), integral (B,))``.
        pathwise: whether each event's gradient is the derivative of the event map at fixed
            uniforms (finite differences of the events agree); ``False`` for gradients that are
            exact only in expectation (LOITS' transport gradient).
        description: one line.
    """

    name: str
    dims: int | None
    n_uniforms: Callable[[int], int]
    fn: Callable[[Tensor, tuple[Tensor, ...], Tensor], tuple[Tensor, Tensor]]
    pathwise: bool = True
    description: str = ""

    def supports(self, dims: int) -> bool:
        return self.dims is None or self.dims == dims

    def sample(self, density: Tensor, grids: tuple[Tensor, ...], uniforms: Tensor) -> tuple[Tensor, Tensor]:
        """Events ``(B, N, D)`` and integrals ``(B,)`` of ``density (B, G1, ..., GD)``."""
        dims = len(grids)
        if not self.supports(dims):
            raise ValueError(f"sampler {self.name!r} handles {self.dims}D densities, not {dims}D")
        if density.dim() != dims + 1 or tuple(density.shape[1:]) != tuple(g.shape[0] for g in grids):
            raise ValueError(f"density of shape {tuple(density.shape)} does not match the grids")
        if uniforms.dim() != 3 or uniforms.shape[0] != density.shape[0] or uniforms.shape[2] != self.n_uniforms(dims):
            raise ValueError(
                f"sampler {self.name!r} needs uniforms of shape (B, N, {self.n_uniforms(dims)}), "
                f"got {tuple(uniforms.shape)}"
            )
        return self.fn(density, tuple(grids), uniforms)


SAMPLERS: dict[str, Sampler] = {}


def register_sampler(sampler: Sampler) -> Sampler:
    """Adds ``sampler`` to :data:`SAMPLERS` (the contract test then covers it)."""
    SAMPLERS[sampler.name] = sampler
    return sampler


def draw(
    name: str, density: Tensor, grids: tuple[Tensor, ...], n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``n`` events per batch row from the sampler ``name``, with uniforms from ``generator``."""
    sampler = SAMPLERS[name]
    shape = (density.shape[0], n, sampler.n_uniforms(len(grids)))
    uniforms = torch.rand(shape, generator=generator, dtype=density.dtype, device=density.device)
    return sampler.sample(density, grids, uniforms)


def _inverse_cdf_1d(density: Tensor, grids: tuple[Tensor, ...], uniforms: Tensor) -> tuple[Tensor, Tensor]:
    events, integral = sample_inverse_cdf(density, grids[0], uniforms[..., 0])
    return events[..., None], integral


register_sampler(
    Sampler(
        "inverse_cdf_1d",
        1,
        lambda d: 1,
        _inverse_cdf_1d,
        description="piecewise-linear inversion of the trapezoid CDF (1D)",
    )
)
register_sampler(
    Sampler(
        "loits_2d",
        2,
        lambda d: 3,
        lambda f, g, u: sample_loits_2d(f, g[0], g[1], u),
        pathwise=False,
        description="LOITS: cell allocation + local CDFs, transport gradient (2D)",
    )
)
register_sampler(
    Sampler(
        "sequential_nd",
        None,
        lambda d: d,
        sample_sequential_nd,
        description="sequential conditional inverse transform (any D)",
    )
)
