"""Smooth acceptance × efficiency: weights ``ε(x)`` for generated events, accept-reject for pseudo-data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from qcf_studio.engine.detector._common import _check_events, _coord_axis, _per_coord, _thin

__all__ = ["Acceptance"]


class Acceptance(nn.Module):
    """Smooth acceptance × efficiency ``ε(x) = max · Π_d sigmoid((x_d − turn_on_d) / width_d)``.

    Generated events keep their positions and have their weights multiplied by ``ε(x)``, which is differentiable
    w.r.t. ``x`` (weight the discriminator's loss with them); pseudo-data keep each event with probability
    ``ε(x)`` (accept-reject), so both describe the same distribution.

    Arguments:
        turn_on: position of the 50 % point of the turn-on, one value or one per coordinate.
        width: width of the logistic turn-on (> 0), one value or one per coordinate.
        max: plateau efficiency in (0, 1].
        dims: number of event coordinates.
        coord_axis: whether events carry a coordinate axis (default: ``dims > 1``).
    """

    differentiable = True
    gradient_note = "acceptance: weights ε(x) differentiable w.r.t. x (data: accept-reject)"
    # buffers (register_buffer), declared for the type checker
    turn_on: Tensor
    width: Tensor

    def __init__(
        self,
        turn_on: float | Sequence[float],
        width: float | Sequence[float],
        max: float = 1.0,
        dims: int = 1,
        coord_axis: bool | None = None,
    ) -> None:
        super().__init__()
        self.coord_axis = _coord_axis(dims, coord_axis)
        self.dims = dims
        t, w = _per_coord("turn_on", turn_on, dims), _per_coord("width", width, dims)
        if not all(v > 0 and math.isfinite(v) for v in w):
            raise ValueError(f"width must be > 0, got {w}")
        if not 0 < max <= 1:
            raise ValueError(f"max must be in (0, 1], got {max}")
        self.max = float(max)
        self.register_buffer("turn_on", torch.tensor(t, dtype=torch.float64))
        self.register_buffer("width", torch.tensor(w, dtype=torch.float64))

    def efficiency(self, events: Tensor) -> Tensor:
        """``ε(x)`` per event, shape of the weights; differentiable w.r.t. ``events``."""
        _check_events(events, self.dims, self.coord_axis)
        t, w = self.turn_on.to(events), self.width.to(events)
        if self.coord_axis:
            return self.max * torch.exp(F.logsigmoid((events - t) / w).sum(-1))
        return self.max * torch.sigmoid((events - t[0]) / w[0])

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        eff = self.efficiency(events)
        return events, eff if weights is None else weights * eff

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eff = self.efficiency(events)
        u = torch.rand(eff.shape, generator=generator, dtype=eff.dtype, device=eff.device)
        return _thin(events, u < eff, self.coord_axis)

    def extra_repr(self) -> str:
        return f"turn_on={self.turn_on.tolist()}, width={self.width.tolist()}, max={self.max:g}"
