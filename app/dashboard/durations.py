"""Durations as people read them in a status line: ``42 s``, ``12 min 5 s``, ``2 h 51 min``."""

from __future__ import annotations

import math

__all__ = ["duration_text"]


def duration_text(seconds: float) -> str:
    """``seconds`` rounded to what matters at its size: seconds below 2 min, minutes and seconds below an hour,
    hours and minutes above."""
    if not math.isfinite(seconds):
        return "unknown"
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    minutes = round(s / 60)
    return f"{minutes // 60} h {minutes % 60} min"
