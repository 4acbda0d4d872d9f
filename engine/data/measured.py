"""Measured data as plain arrays: events per observable, integrated cross sections, optional per-event weights.

Torch-free (numpy; xarray only to convert), so that data files are checked (:mod:`engine.data.datafiles`) as a spec
is validated, without torch. Pseudo-data are made in :mod:`engine.data.pseudodata`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.problem_catalog import problem_info

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["MeasuredData", "check_weights", "normalise_weights"]


def normalise_weights(weights: np.ndarray | None) -> np.ndarray | None:
    """Weights ``(O, N)`` scaled to mean 1 per observable; ``None`` if ``None`` or constant per observable."""
    if weights is None:
        return None
    mean = weights.mean(axis=1, keepdims=True)
    if np.all(weights == mean):
        return None
    return weights / mean


def check_weights(weights: np.ndarray, shape: tuple[int, int], source: str, names: tuple[str, ...] = ()) -> np.ndarray:
    """``weights`` as float64 ``shape (O, N)``; a ``ValueError`` names ``source``, the variable ``weights``
    and the observable when they are misshapen, not finite, negative or all zero for an observable."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != tuple(shape):
        raise ValueError(f"{source}: variable 'weights' has shape {w.shape}, the events need {tuple(shape)}")
    for o in range(w.shape[0]):
        name = names[o] if o < len(names) else str(o)
        bad = ~np.isfinite(w[o])
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{source}: variable 'weights' of observable {name!r}: event {i} has a non-finite weight ({w[o, i]})"
            )
        if (w[o] < 0).any():
            i = int(np.argmax(w[o] < 0))
            raise ValueError(
                f"{source}: variable 'weights' of observable {name!r}: event {i} has a negative "
                f"weight ({w[o, i]}); negative weights are not supported"
            )
        if not w[o].sum() > 0:
            raise ValueError(f"{source}: variable 'weights' of observable {name!r}: all weights are zero")
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
        weights: per-event weights ``(O, N)``, or ``None`` (unweighted). Cross sections are the
            measured ones as given (``xsec``), never recomputed from the weights.
    """

    kind: str
    events: np.ndarray
    xsec: np.ndarray
    xsec_err: np.ndarray
    truth: np.ndarray | None = None
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.events.ndim == 2:  # 1D events stored without their coordinate axis
            self.events = self.events[..., None]
        if self.weights is not None:
            self.weights = check_weights(self.weights, self.events.shape[:2], "measured data")

    def normalised_weights(self) -> np.ndarray | None:
        """The weights scaled to mean 1 per observable, as the fits use them; ``None`` when unweighted.

        Weights constant within each observable are the unweighted case (the scale drops out of
        every fit once normalised) and give ``None``, so such data reproduce unweighted results exactly.
        """
        return normalise_weights(self.weights)

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
        return MeasuredData(self.kind, self.events, xsec, self.xsec_err, self.truth, weights)

    @property
    def events_1d(self) -> np.ndarray:
        """The events of the first coordinate, ``(O, N)``."""
        return self.events[..., 0]

    def to_xarray(self) -> xr.Dataset:
        import xarray as xr  # here: checking a data file needs no xarray of its own

        problem = problem_info(self.kind)
        events: tuple[tuple[str, ...], np.ndarray]
        if self.events.shape[-1] == 1:
            events = (("observable", "event"), self.events[..., 0])
        else:
            events = (("observable", "event", "coord"), self.events)
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
            ds["weights"] = (("observable", "event"), self.weights)
            ds["weights"].attrs["description"] = "per-event weights (normalised to mean 1 per observable in fits)"
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
        weights = None
        if "weights" in ds:
            weights = check_weights(ds["weights"].values, events.shape[:2], source, problem.observable_names)
        return cls(kind, events, ds["xsec"].values, ds["xsec_err"].values, truth, weights)
