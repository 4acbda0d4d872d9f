"""Admixture of a background of known shape (uniform or truncated exponential per coordinate) that replaces a
fixed fraction of each event set."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from qcf_studio.engine.choices import BACKGROUND_SHAPES
from qcf_studio.engine.detector._common import Domain, _check_events, _coord_axis, _domain_tensors, _per_coord

__all__ = ["Background"]


class Background(nn.Module):
    """Admixture of background of a known shape: a fixed fraction ``round(f · N)`` of each event set is
    replaced by background draws on the domain (the replaced slots are chosen with the generator).

    Shapes, per coordinate (independent): ``uniform`` on ``[lo, hi]``, or ``exponential`` with density
    ``∝ exp(slope · x)`` truncated to ``[lo, hi]``. The background does not depend on θ, so replaced events
    carry no gradient; the others keep theirs. Replaced events get the mean weight of the kept ones, so the
    background is the fraction ``f`` of the weighted events too. Pseudo-data: the same on the events present.

    Arguments:
        domain: ``[(lo, hi), ...]``, one pair per coordinate.
        fraction: background fraction ``f`` in [0, 1).
        shape: ``"uniform"`` or ``"exponential"``.
        slope: exponential slope(s) per unit of ``x`` (one value or one per coordinate); exponential only.
        coord_axis: whether events carry a coordinate axis (default: more than one coordinate).
    """

    differentiable = True
    gradient_note = "background: replaced events carry no gradient (θ-independent), the others keep theirs"
    SHAPES = BACKGROUND_SHAPES
    # buffers (register_buffer), declared for the type checker
    lo: Tensor
    hi: Tensor
    slope: Tensor

    def __init__(
        self,
        domain: Domain,
        fraction: float,
        shape: str = "uniform",
        slope: float | Sequence[float] = -1.0,
        coord_axis: bool | None = None,
    ) -> None:
        super().__init__()
        lo, hi = _domain_tensors(domain)
        self.dims = lo.shape[0]
        self.coord_axis = _coord_axis(self.dims, coord_axis)
        if not 0 <= fraction < 1:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        if shape not in self.SHAPES:
            raise ValueError(f"shape must be one of {', '.join(self.SHAPES)}, got {shape!r}")
        self.fraction, self.shape = float(fraction), shape
        s = _per_coord("slope", slope, self.dims) if shape == "exponential" else [0.0] * self.dims
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.register_buffer("slope", torch.tensor(s, dtype=torch.float64))

    def density(self, x: Tensor) -> Tensor:
        """Normalised background density at ``x`` (layout as the events), zero outside the domain."""
        lo, hi, s = (b.to(x) for b in (self.lo, self.hi, self.slope))
        if not self.coord_axis:
            x = x.unsqueeze(-1)
        length = hi - lo
        small = s.abs() * length < 1e-8
        s_safe = torch.where(small, torch.ones_like(s), s)
        # exp(s (x - lo)) * s / expm1(s L), written to stay finite for large |s L|
        log_norm = torch.where(small, -torch.log(length), torch.log(s_safe.abs()) - _log_abs_expm1(s_safe * length))
        log_p = torch.where(small, torch.zeros_like(x), s * (x - lo)) + log_norm
        inside = (x >= lo) & (x <= hi)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf)).sum(-1).exp()

    def sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Background events of batch shape ``shape`` (plus the coordinate axis when ``coord_axis``)."""
        u = torch.rand((*shape, self.dims), generator=generator, dtype=torch.float64, device=device)
        lo, hi, s = (b.to(device) for b in (self.lo, self.hi, self.slope))
        length = hi - lo
        small = s.abs() * length < 1e-8
        s_safe = torch.where(small, torch.ones_like(s), s)
        # inverse CDF of exp(s x) on [lo, hi], from the edge where the density is largest
        neg = lo + torch.log1p(u * torch.expm1(s_safe * length)) / s_safe
        pos = hi + torch.log1p((1 - u) * torch.expm1(-s_safe * length)) / s_safe
        x = torch.where(small, lo + u * length, torch.where(s_safe < 0, neg, pos))
        x = torch.minimum(torch.maximum(x, lo), hi).to(dtype)
        return x if self.coord_axis else x.squeeze(-1)

    def _replace(self, events: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        n = events.shape[-2] if self.coord_axis else events.shape[-1]
        n_bg = round(self.fraction * n)
        idx = torch.randperm(n, generator=generator, device=events.device)[:n_bg]
        batch = events.shape[:-2] if self.coord_axis else events.shape[:-1]
        bg = self.sample((*batch, n_bg), generator, events.dtype, events.device)
        out = events.clone()
        if self.coord_axis:
            out[..., idx, :] = bg
        else:
            out[..., idx] = bg
        return out, idx

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        _check_events(events, self.dims, self.coord_axis)
        if self.fraction == 0.0:
            return events, weights
        out, idx = self._replace(events, generator)
        if weights is not None and idx.numel():
            mask = torch.ones(weights.shape[-1], dtype=torch.bool, device=weights.device)
            mask[idx] = False
            mean_kept = weights[..., mask].mean(-1, keepdim=True) if mask.any() else weights.mean(-1, keepdim=True)
            weights = weights.clone()
            weights[..., idx] = mean_kept.expand(*weights.shape[:-1], idx.numel())
        return out, weights

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_events(events, self.dims, self.coord_axis)
        return events if self.fraction == 0.0 else self._replace(events, generator)[0]

    def extra_repr(self) -> str:
        slope = f", slope={self.slope.tolist()}" if self.shape == "exponential" else ""
        return f"fraction={self.fraction:g}, shape={self.shape}{slope}"


def _log_abs_expm1(z: Tensor) -> Tensor:
    """``log|exp(z) − 1|`` without overflow."""
    return torch.where(z > 0, z + torch.log(-torch.expm1(-z)), torch.log(-torch.expm1(z)))
