"""Detector effects as torch modules, applied alike to generated events and to pseudo-data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ResolutionSmearing"]


class ResolutionSmearing(nn.Module):
    """Relative resolution smearing ``x → x (1 − R)`` with ``R ~ N(0, resolution²)``.

    Differentiable w.r.t. the events (the noise is drawn independently of them), so the
    generator's gradient passes through. A resolution of 0 is the identity.

    Arguments:
        resolution: the standard deviation of ``R``.
    """

    def __init__(self, resolution: float = 0.0) -> None:
        super().__init__()
        if resolution < 0:
            raise ValueError(f"resolution must be >= 0, got {resolution}")
        self.resolution = float(resolution)

    def forward(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.resolution == 0.0:
            return events
        noise = torch.randn(events.shape, generator=generator, dtype=events.dtype, device=events.device)
        return events * (1.0 - self.resolution * noise)
