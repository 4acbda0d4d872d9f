"""Histograms of events for the closure and monitoring numbers: common bin edges for data and generated
events, (weighted) counts, unit-integral densities and the χ²/ndf of two histograms' shapes (their
x-marginals: :mod:`qcf_studio.engine.data.marginals`)."""

from __future__ import annotations

import numpy as np

from qcf_studio.engine.data.pseudodata import MeasuredData

__all__ = [
    "HIST_BINS",
    "HIST_BINS_2D",
    "histogram_edges",
    "histogram_counts",
    "density_histograms",
    "data_histograms",
    "data_counts",
    "data_edges",
    "chi2_per_ndf",
]

HIST_BINS = 40  # per axis for 1D events
HIST_BINS_2D = 20  # per axis for 2D events


def histogram_edges(events: np.ndarray, bins: int | None = None, counts: np.ndarray | None = None) -> np.ndarray:
    """Common bin edges for data and generated histograms of ``events (O, N, D)``: ``(O, D, bins + 1)``.

    The edges span the 0.01 to 99.99 percentiles of the events along each coordinate (of the first
    ``counts[o]`` events of observable ``o`` when given: :attr:`MeasuredData.counts`).
    """
    d = events.shape[-1]
    bins = bins or (HIST_BINS if d == 1 else HIST_BINS_2D)
    if counts is None:
        lo = np.percentile(events, 0.01, axis=1)  # (O, D)
        hi = np.percentile(events, 99.99, axis=1)
    else:
        lo = np.stack([np.percentile(e[:c], 0.01, axis=0) for e, c in zip(events, counts)])
        hi = np.stack([np.percentile(e[:c], 99.99, axis=0) for e, c in zip(events, counts)])
    return np.stack([[np.linspace(a, b, bins + 1) for a, b in zip(lo_o, hi_o)] for lo_o, hi_o in zip(lo, hi)])


def histogram_counts(events: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) counts of ``events (O, N, D)`` in ``edges (O, D, bins + 1)``: ``(O, bins[, bins])``."""
    out = []
    for o, (e, ed) in enumerate(zip(events, edges)):
        w = None if weights is None else weights[o]
        counts, _ = np.histogramdd(e, bins=list(ed), weights=w)
        out.append(counts)
    return np.stack(out)


def density_histograms(events: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Normalised histograms (unit integral) of ``events (O, N, D)``: ``(O, bins[, bins])``."""
    counts = histogram_counts(events, edges, weights)
    out = []
    for c, ed in zip(counts, edges):
        area = np.diff(ed[0])
        for axis_edges in ed[1:]:
            area = np.multiply.outer(area, np.diff(axis_edges))
        out.append(c / max(c.sum(), 1e-300) / area)
    return np.stack(out)


def data_edges(data: MeasuredData) -> np.ndarray:
    """:func:`histogram_edges` of the measured events (without the padding of unequal counts)."""
    return histogram_edges(data.events, counts=data.counts)


def _data_weights(data: MeasuredData) -> np.ndarray | None:
    """The weights histograms give the measured events: theirs, or 1 for events and 0 for padding."""
    if data.weights is not None or data.valid is None:
        return data.weights
    return data.valid.astype(np.float64)


def data_histograms(data: MeasuredData) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges ``(O, D, bins + 1)`` and normalised (weighted) histograms ``(O, bins[, bins])`` of the
    measured events."""
    edges = data_edges(data)
    return edges, density_histograms(data.events, edges, _data_weights(data))


def data_counts(data: MeasuredData, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(Weighted) counts of the measured events in ``edges`` and their sums of squared weights
    (``None`` when unweighted: the Poisson variance is the count). Negative weights (sWeights) may make
    a bin's count negative; its variance Σw² stays positive."""
    if data.weights is None:
        return histogram_counts(data.events, edges, _data_weights(data)), None
    w = data.weights
    return histogram_counts(data.events, edges, w), histogram_counts(data.events, edges, w * w)


def chi2_per_ndf(
    data_counts: np.ndarray,
    gen_counts: np.ndarray,
    gen_sumw2: np.ndarray | None = None,
    data_sumw2: np.ndarray | None = None,
) -> np.ndarray:
    """χ²/ndf of the shapes of two histograms per observable, ``(O, bins...)`` → ``(O,)``.

    Both are normalised to unit sum; each bin's variance is the sum of the two Poisson (or
    sum-of-squared-weights) variances. Bins empty in both are skipped; ndf = bins used − 1.
    """
    out = []
    for o in range(data_counts.shape[0]):
        d, g = data_counts[o].ravel(), gen_counts[o].ravel()
        w2 = g if gen_sumw2 is None else gen_sumw2[o].ravel()
        d2 = d if data_sumw2 is None else data_sumw2[o].ravel()
        nd, ng = d.sum(), g.sum()
        var = d2 / nd**2 + w2 / ng**2
        use = var > 0
        chi2 = np.sum((d[use] / nd - g[use] / ng) ** 2 / var[use])
        out.append(chi2 / max(int(use.sum()) - 1, 1))
    return np.asarray(out)
