"""Analytic relative resolution smearing of the events, the detector's differentiable smearing effect; it also
keeps the original call ``smear(events, generator=gen)`` that returns the smeared events alone."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ResolutionSmearing"]

_MISSING: Any = object()


class ResolutionSmearing(nn.Module):
    """Relative resolution smearing ``x → x (1 − R)`` with ``R ~ N(0, resolution²)``, per coordinate.

    Differentiable w.r.t. the events (the noise is drawn independently of them), so the
    generator's gradient passes through. A resolution of 0 is the identity. Works for any event layout.

    Calls:
        ``smear(events, generator=gen) -> events`` (the original call), or
        ``smear(events, weights, generator) -> (events, weights)`` (the common effect interface; weights pass
        through unchanged).

    Arguments:
        resolution: the standard deviation of ``R``.
    """

    differentiable = True
    gradient_note = "resolution: reparameterised noise, events differentiable"

    def __init__(self, resolution: float = 0.0) -> None:
        super().__init__()
        if resolution < 0:
            raise ValueError(f"resolution must be >= 0, got {resolution}")
        self.resolution = float(resolution)

    def smear(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.resolution == 0.0:
            return events
        noise = torch.randn(events.shape, generator=generator, dtype=events.dtype, device=events.device)
        return events * (1.0 - self.resolution * noise)

    def forward(
        self, events: Tensor, weights: Tensor | None = _MISSING, generator: torch.Generator | None = None
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        if isinstance(weights, torch.Generator):  # old positional call smear(events, gen)
            weights, generator = _MISSING, weights
        if weights is _MISSING:
            return self.smear(events, generator)
        return self.smear(events, generator), weights

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.smear(events, generator)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution:g}"
