"""What every reader of measured data checks, whatever the file's format: at least :data:`MIN_EVENTS` events
per observable (the observables may have different numbers), events inside the problem's domain (widened for
smeared data), finite cross sections with positive errors. Refusals are :class:`DataFileError`s naming the file."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.textlimits import shown

__all__ = ["DataFileError", "MIN_EVENTS", "SMEARING_SIGMAS", "check_counts", "check_domain", "check_cross_sections"]

MIN_EVENTS = 100  # per observable, as problem.events in a spec
SMEARING_SIGMAS = 6.0  # events may lie this many resolution widths past the domain (the MLE's folded grid)


class DataFileError(ValueError):
    """A file that cannot be measured data; the message names the file and what is wrong. ``field``: the spec's
    field at fault when it is not the file itself (``problem.columns.sigma1``; ``None``: ``problem.data``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def check_cross_sections(label: str, xsec: np.ndarray, err: np.ndarray, problem: ProblemInfo, where: str) -> None:
    for n, v, e in zip(problem.observable_names, xsec, err):
        if not (np.isfinite(v) and np.isfinite(e)):
            raise DataFileError(f"{label}: {where}: the cross section of {n!r} is not finite ({v} ± {e})")
        if not e > 0:
            raise DataFileError(f"{label}: {where}: the cross-section error of {n!r} must be positive, got {e}")


def check_counts(label: str, counts: dict[str, int]) -> None:
    """At least :data:`MIN_EVENTS` events per observable (each observable may have its own number)."""
    few = {n: c for n, c in counts.items() if c < MIN_EVENTS}
    if few:
        n, c = next(iter(few.items()))
        raise DataFileError(
            f"{label}: observable {n!r} has {c} events; at least {MIN_EVENTS} per observable are needed"
        )


def check_domain(
    label: str, problem: ProblemInfo, name: str, events: np.ndarray, resolution: float, where: Callable[[int], str]
) -> None:
    """Every event inside the domain, widened by ``SMEARING_SIGMAS`` resolution widths for smeared data."""
    k = SMEARING_SIGMAS * resolution
    for axis, (coord, (a, b)) in enumerate(zip("xy", problem.domain)):
        lo, hi = a - k * abs(a), b + k * abs(b)
        v = events[:, axis]
        out = (v < lo) | (v > hi)
        if out.any():
            i = int(np.argmax(out))
            span = f"[{lo:.6g}, {hi:.6g}]"
            if k:
                span += f" (resolution {resolution} allows {SMEARING_SIGMAS:g} widths past [{a}, {b}])"
            raise DataFileError(
                f"{label}: {int(out.sum())} events of observable {name!r} lie outside the "
                f"{problem.kind} "
                f"domain {coord} ∈ {span}; first at {where(i)}: {coord} = {v[i]:.6g}"
            )


def file_resolution(label: str, text: str | None, what: str = "the file's 'resolution'") -> float:
    """A file's ``resolution`` setting (0 without one), a number in [0, 1); ``what`` names it in the refusal (for a
    CSV file, its line)."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise DataFileError(f"{label}: {what} {shown(text)} must be a number in [0, 1)")
    return value
