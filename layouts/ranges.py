"""Axis ranges computed from what a panel must show in full (the truth and the bands), not from whichever
element HoloViews happens to range on."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["padded_range"]


def padded_range(*arrays: ArrayLike, margin: float = 0.06, from_zero: bool = True) -> tuple[float, float]:
    """``(low, high)`` holding every finite value of ``arrays``, widened by ``margin`` of the span on each side
    (at the bottom only when it is below 0 with ``from_zero``: a density's axis starts at 0).

    ``(0, 1)`` when there is nothing finite to show yet (a panel before its first snapshot).
    """
    finite = [a[np.isfinite(a)] for a in (np.asarray(v, dtype=float).ravel() for v in arrays)]
    values = np.concatenate(finite) if finite else np.zeros(0)
    if not values.size:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if from_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    span = high - low or max(abs(high), 1.0)
    return (low - margin * span if low < 0 or not from_zero else low), high + margin * span
