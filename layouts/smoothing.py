"""Smoothing of noisy training curves, as TensorBoard's slider does it: a debiased exponential moving average.

References:
    TensorBoard's scalar dashboard: its smoothing slider (an EMA debiased by 1 − w^n, non-finite points skipped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["EmaState", "ema"]

EmaState = tuple[float, int]  # (running average before debiasing, finite values seen so far)


def ema(values: Iterable[float], weight: float, state: EmaState = (0.0, 0)) -> tuple[np.ndarray, EmaState]:
    r"""The exponential moving average of ``values`` with smoothing ``weight`` in [0, 1): 0 gives the values back.

    :math:`m_n = w\,m_{n-1} + (1 - w)\,v_n`, divided by :math:`1 - w^n` so that the first points are not pulled
    towards 0 (an average of the :math:`n` values seen, not of zeros before them). Non-finite values are kept
    as they are and skipped by the average (a gap stays a gap).

    Arguments:
        values: the raw curve, oldest first.
        weight: the smoothing, 0 (raw) to below 1.
        state: what a previous call returned, to continue a curve with its new points only.

    Returns:
        The smoothed values and the state after the last of them.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight {weight} is not in [0, 1)")
    last, n = float(state[0]), int(state[1])
    raw = np.asarray(values, dtype=float)
    out = raw.copy()
    for i, v in enumerate(raw.tolist()):  # a Python loop: a few thousand points at most, and NaN-aware
        if not math.isfinite(v):
            continue
        last = last * weight + (1.0 - weight) * v
        n += 1
        out[i] = last / (1.0 - weight**n)
    return out, (last, n)
