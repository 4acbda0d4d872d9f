"""Private helpers shared by the detector effects: event layout checks, per-coordinate values, domains,
accept-reject thinning of event sets, and calling a detector of either interface (``Domain`` is the type of a
domain, one ``(lo, hi)`` pair per coordinate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Domain"]

Domain = Sequence[tuple[float, float]]


def _coord_axis(dims: int, coord_axis: bool | None) -> bool:
    if dims < 1:
        raise ValueError(f"dims must be at least 1, got {dims}")
    if coord_axis is None:
        return dims > 1
    if dims > 1 and not coord_axis:
        raise ValueError(f"{dims}-dimensional events need a coordinate axis (coord_axis=True)")
    return bool(coord_axis)


def _check_events(events: Tensor, dims: int, coord_axis: bool) -> None:
    if coord_axis and (events.ndim < 2 or events.shape[-1] != dims):
        raise ValueError(f"expected events of shape (..., N, {dims}), got {tuple(events.shape)}")
    if not coord_axis and events.ndim < 1:
        raise ValueError("expected events of shape (..., N), got a scalar")


def _per_coord(name: str, value: float | Sequence[float], dims: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * dims
    values = [float(v) for v in value]
    if len(values) != dims:
        raise ValueError(f"{name}: expected one value or {dims}, got {len(values)}")
    return values


def _domain_tensors(domain: Domain) -> tuple[Tensor, Tensor]:
    pairs = [tuple(map(float, p)) for p in domain]
    if not pairs or any(len(p) != 2 or not p[0] < p[1] for p in pairs):
        raise ValueError(f"domain: expected (lo, hi) pairs with lo < hi, got {list(domain)!r}")
    lo, hi = zip(*pairs)
    return torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)


def _thin(events: Tensor, keep: Tensor, coord_axis: bool) -> Tensor:
    """Keep the events where ``keep`` along the event axis; sets with a leading batch shape are cut to the
    smallest kept count (the kept events of a set are i.i.d., so its first ``M`` are an unbiased subset)."""
    n_axis = keep.ndim - 1
    m = int(keep.sum(-1).min()) if keep.ndim > 1 else int(keep.sum())
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :m]  # kept first, in order
    if coord_axis:
        order = order.unsqueeze(-1).expand(*order.shape, events.shape[-1])
    return torch.gather(events, n_axis, order)


def _detect(detector: Any, events: Tensor, generator: torch.Generator | None) -> Tensor:
    """Detector-level events from an old-style (tensor) or new-style ((events, weights)) detector."""
    if hasattr(detector, "apply_to_data"):
        return detector.apply_to_data(events, generator)
    out = detector(events, generator=generator)
    return out[0] if isinstance(out, tuple) else out
