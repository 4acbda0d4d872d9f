"""Measured data as plain arrays: events per observable, integrated cross sections, optional per-event weights.

Torch-free (numpy; xarray only to convert), so that data files are checked (:mod:`qcf_studio.engine.data.datafiles`) as
a spec
is validated, without torch. Pseudo-data are made in :mod:`qcf_studio.engine.data.pseudodata`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qcf_studio.engine.problem_catalog import problem_info

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["MeasuredData", "check_weights", "normalise_weights", "valid_mask"]


def valid_mask(counts: np.ndarray | None, n: int) -> np.ndarray | None:
    """``(O, n)`` True where event ``i < counts[o]`` is a measured event (not padding); ``None`` when all are."""
    if counts is None:
        return None
    return np.arange(n)[None, :] < np.asarray(counts)[:, None]


def normalise_weights(weights: np.ndarray | None, counts: np.ndarray | None = None) -> np.ndarray | None:
    """Weights ``(O, N)`` scaled to mean 1 per observable over its ``counts[o]`` events (padding: weight 0);
    ``None`` if ``None`` or constant per observable."""
    if weights is None:
        return None
    mask = valid_mask(counts, weights.shape[1])
    if mask is None:
        mean = weights.mean(axis=1, keepdims=True)
        if np.all(weights == mean):
            return None
        return weights / mean
    mean = np.where(mask, weights, 0.0).sum(axis=1, keepdims=True) / np.asarray(counts)[:, None]
    if np.all((weights == mean) | ~mask):
        return None
    return np.where(mask, weights / mean, 0.0)


def check_weights(
    weights: np.ndarray,
    shape: tuple[int, int],
    source: str,
    names: tuple[str, ...] = (),
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """``weights`` as float64 ``shape (O, N)``, padding (events past ``counts``) set to 0; a ``ValueError`` names
    ``source``, the variable ``weights`` and the observable when they are misshapen, not finite, or when an
    observable's weights do not sum to a positive number. Negative weights (sWeights) are allowed here: which
    fits can use them is decided where the method is known (:func:`qcf_studio.engine.data.datafiles.read_spec_data`)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != tuple(shape):
        raise ValueError(f"{source}: variable 'weights' has shape {w.shape}, the events need {tuple(shape)}")
    mask = valid_mask(counts, w.shape[1])
    if mask is not None and not np.all(w[~mask] == 0.0):
        w = np.where(mask, w, 0.0)  # a copy: the caller's array (e.g. NaN padding in a file) stays as it was
    for o in range(w.shape[0]):
        name = names[o] if o < len(names) else str(o)
        row = w[o] if mask is None else w[o, mask[o]]
        bad = ~np.isfinite(row)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{source}: variable 'weights' of observable {name!r}: event {i} has a non-finite weight ({row[i]})"
            )
        if not row.sum() > 0:
            what = "all weights are zero" if not row.any() else f"the weights sum to {row.sum():.6g}, not above 0"
            raise ValueError(f"{source}: variable 'weights' of observable {name!r}: {what}")
    return w


@dataclass
class MeasuredData:
    """Events per observable plus integrated cross sections, as plain arrays.

    Attributes:
        kind: the problem kind.
        events: shape ``(O, N, D)``, events per observable (detector level), ``D`` coordinates each.
        xsec: integrated cross section per observable, shape ``(O,)``.
        xsec_err: its statistical error, shape ``(O,)``.
        truth: the parameters the pseudo-data were made from, or ``None`` for real data.
        weights: per-event weights ``(O, N)``, or ``None`` (unweighted); negative weights (sWeights) are
            allowed, as long as each observable's sum is positive. Cross sections are the measured ones as
            given (``xsec``), never recomputed from the weights.
        counts: events per observable ``(O,)`` when the observables have different numbers of events, else
            ``None``. The arrays are then padded: ``events[o, counts[o]:]`` repeat the observable's first event
            (finite and inside the domain, so array code needs no special case) and carry weight 0; every fit
            and histogram reads only the first ``counts[o]`` (:attr:`valid`).
    """

    kind: str
    events: np.ndarray
    xsec: np.ndarray
    xsec_err: np.ndarray
    truth: np.ndarray | None = None
    weights: np.ndarray | None = None
    counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.events.ndim == 2:  # 1D events stored without their coordinate axis
            self.events = self.events[..., None]
        o, n = self.events.shape[:2]
        if self.counts is not None:
            c = np.asarray(self.counts)
            if c.shape != (o,) or not np.issubdtype(c.dtype, np.integer) or (c < 1).any() or (c > n).any():
                raise ValueError(f"measured data: counts {c!r} must be {o} whole numbers in [1, {n}]")
            self.counts = None if (c == n).all() else c.astype(np.int64)
        mask = self.valid
        if mask is not None and not (self.events == self.events[:, :1]).all(axis=-1)[~mask].all():
            self.events = np.where(mask[..., None], self.events, self.events[:, :1])  # padding: the first event
        if self.weights is not None:
            self.weights = check_weights(self.weights, (o, n), "measured data", counts=self.counts)

    @classmethod
    def from_observables(
        cls,
        kind: str,
        events: list[np.ndarray],
        xsec: np.ndarray,
        xsec_err: np.ndarray,
        weights: list[np.ndarray] | None = None,
        truth: np.ndarray | None = None,
    ) -> MeasuredData:
        """Measured data from one array of events ``(N_o, D)`` (and of weights ``(N_o,)``) per observable, which
        may differ in length: shorter ones are padded (see :attr:`counts`)."""
        counts = np.asarray([len(e) for e in events], dtype=np.int64)
        n = int(counts.max())
        table = np.zeros((len(events), n, events[0].shape[-1]))
        w = None if weights is None else np.zeros((len(events), n))
        for o, e in enumerate(events):
            table[o, : len(e)] = e
            table[o, len(e) :] = e[0]
            if w is not None and weights is not None:
                w[o, : len(e)] = weights[o]
        return cls(kind, table, np.asarray(xsec), np.asarray(xsec_err), truth, w, counts)

    @property
    def event_counts(self) -> np.ndarray:
        """Measured events per observable, ``(O,)``."""
        o, n = self.events.shape[:2]
        return np.full(o, n, dtype=np.int64) if self.counts is None else self.counts

    @property
    def valid(self) -> np.ndarray | None:
        """``(O, N)``: True for measured events, False for padding; ``None`` when every observable has ``N``."""
        return valid_mask(self.counts, self.events.shape[1])

    @property
    def negative_weights(self) -> bool:
        """Whether any event has a negative weight (sWeights): only the likelihood fit can use such data."""
        return self.weights is not None and bool((self.weights < 0).any())

    def normalised_weights(self) -> np.ndarray | None:
        """The weights scaled to mean 1 per observable, as the fits use them; ``None`` when unweighted.

        Weights constant within each observable are the unweighted case (the scale drops out of
        every fit once normalised) and give ``None``, so such data reproduce unweighted results exactly.
        """
        return normalise_weights(self.weights, self.counts)

    def shard(self, rank: int, ranks: int) -> MeasuredData:
        """Every ``ranks``-th event from ``rank`` on (a data-parallel rank's share), counts and weights with them."""
        if ranks == 1:
            return self
        counts = None if self.counts is None else np.maximum((self.counts - rank + ranks - 1) // ranks, 1)
        weights = None if self.weights is None else self.weights[:, rank::ranks]
        part = self.events[:, rank::ranks]
        return MeasuredData(self.kind, part, self.xsec, self.xsec_err, self.truth, weights, counts)

    def bootstrap_replica(self, seed: int) -> MeasuredData:
        """A bootstrap replica of these data, reproducible under ``seed``.

        Each event is counted ``k ~ Poisson(1)`` times (its weight multiplied by ``k``; the events
        themselves are shared, not copied), and each cross section is redrawn from a Gaussian of its
        error. Fits of many replicas scatter like fits of independent measurements would, so their
        spread estimates the statistical error of any estimator, the GAN's included.
        """
        rng = np.random.default_rng(int(seed))
        counts = rng.poisson(1.0, size=self.events.shape[:2]).astype(np.float64)
        weights = counts if self.weights is None else counts * self.weights
        xsec = self.xsec + self.xsec_err * rng.standard_normal(self.xsec.shape)
        return MeasuredData(self.kind, self.events, xsec, self.xsec_err, self.truth, weights, self.counts)

    @property
    def events_1d(self) -> np.ndarray:
        """The events of the first coordinate, ``(O, N)``."""
        return self.events[..., 0]

    def to_xarray(self) -> xr.Dataset:
        import xarray as xr  # here: checking a data file needs no xarray of its own

        problem = problem_info(self.kind)
        mask = self.valid
        # Unequal counts: the padding is written as NaN (no event) and the counts as a variable of their own.
        values = self.events if mask is None else np.where(mask[..., None], self.events, np.nan)
        events: tuple[tuple[str, ...], np.ndarray]
        if values.shape[-1] == 1:
            events = (("observable", "event"), values[..., 0])
        else:
            events = (("observable", "event", "coord"), values)
        ds = xr.Dataset(
            {
                "events": events,
                "xsec": (("observable",), self.xsec),
                "xsec_err": (("observable",), self.xsec_err),
            },
            coords={
                "observable": list(problem.observable_names),
                "event": np.arange(self.events.shape[1]),
                "param": list(problem.param_names),
            },
            attrs={"problem": self.kind},
        )
        ds["events"].attrs["description"] = "detector-level events per observable"
        ds["xsec"].attrs["description"] = "integrated cross section per observable"
        if self.events.shape[-1] > 1:
            ds = ds.assign_coords(coord=["x", "y"][: self.events.shape[-1]])
        if self.truth is not None:
            ds["params_true"] = (("param",), self.truth)
        if self.weights is not None:
            ds["weights"] = (
                ("observable", "event"),
                self.weights if mask is None else np.where(mask, self.weights, np.nan),
            )
            ds["weights"].attrs["description"] = "per-event weights (normalised to mean 1 per observable in fits)"
        if self.counts is not None:
            ds["counts"] = (("observable",), self.counts)
            ds["counts"].attrs["description"] = "events per observable: events[o, counts[o]:] are padding (NaN)"
        return ds

    @classmethod
    def from_xarray(cls, ds: xr.Dataset, source: str = "dataset") -> MeasuredData:
        """Read measured data back; a ``ValueError`` names ``source`` and what is missing."""
        for var in ("events", "xsec", "xsec_err"):
            if var not in ds:
                raise ValueError(f"{source}: variable {var!r} is missing")
        kind = ds.attrs.get("problem")
        if not isinstance(kind, str):
            raise ValueError(f"{source}: attribute 'problem' is missing")
        problem = problem_info(kind)
        if ds["events"].shape[0] != len(problem.observable_names):
            raise ValueError(
                f"{source}: 'events' has {ds['events'].shape[0]} observables, "
                f"{kind} has {len(problem.observable_names)}"
            )
        dims = ds["events"].shape[2] if ds["events"].ndim == 3 else 1
        if dims != problem.event_dims:
            raise ValueError(f"{source}: 'events' have {dims} coordinates, {kind} events have {problem.event_dims}")
        truth = ds["params_true"].values if "params_true" in ds else None
        events = ds["events"].values
        counts = None
        if "counts" in ds:
            counts = np.asarray(ds["counts"].values)
            n = events.shape[1]
            if counts.shape != events.shape[:1] or not np.issubdtype(counts.dtype, np.integer):
                raise ValueError(f"{source}: variable 'counts' must hold a whole number per observable")
            if (counts < 1).any() or (counts > n).any():
                raise ValueError(f"{source}: variable 'counts' must lie in [1, {n}] (the events stored)")
        weights = None
        if "weights" in ds:
            weights = check_weights(ds["weights"].values, events.shape[:2], source, problem.observable_names, counts)
        return cls(kind, events, ds["xsec"].values, ds["xsec_err"].values, truth, weights, counts)
