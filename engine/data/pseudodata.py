"""Measured data for a problem: pseudo-data from a known truth, and its NetCDF form.

Pseudo-data are drawn from the truth on a fine float64 grid (so the training sampler's grid
bias is not baked into the data), smeared by the same detector model the generator sees, and
carry the integrated cross section of each observable with its statistical error
``σ_tot/√N`` (the luminosity is chosen so that the expected count is the requested ``events``).

Measured data may carry per-event weights ``(O, N)`` (finite, negative ones allowed, a positive sum per
observable) and observables of different lengths (``counts``); ``None`` means unweighted (equal lengths), and every
result is then exactly what it was before weights (unequal lengths) existed. How the fits use them:
:meth:`MeasuredData.normalised_weights`. :class:`MeasuredData` itself lives in the torch-free
:mod:`qcf_studio.engine.data.measured` (data files are checked without torch); it is re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from qcf_studio.engine.data.measured import MeasuredData, check_weights, normalise_weights
from qcf_studio.engine.detector import DetectorChain, ResolutionSmearing
from qcf_studio.engine.problems import Problem

__all__ = ["MeasuredData", "make_pseudo_data", "check_weights", "normalise_weights"]


def make_pseudo_data(
    problem: Problem,
    truth: np.ndarray,
    events: int,
    seed: int,
    resolution: float | DetectorChain = 0.0,
) -> MeasuredData:
    """Pseudo-data of ``events`` events per observable from ``truth``, reproducible under ``seed``.

    ``resolution`` is a relative resolution or a whole detector chain (acceptance, background, ...).
    With an acceptance the events kept are fewer than ``events`` and the cross sections are the
    visible ones (times the fraction of events kept).
    """
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.as_tensor(truth, dtype=torch.float64)
    x, xsec = problem.pseudo_events(theta, events, gen)  # (O, N, D), (O,)
    n_obs = x.shape[0]
    rel_err = 1.0 / np.sqrt(events)
    fluct = torch.randn(n_obs, generator=gen, dtype=torch.float64).numpy()
    # Detector effects draw last, so the same seed gives the same truth-level events and cross
    # sections with and without them.
    if isinstance(resolution, DetectorChain):
        if resolution.weighted:  # the visible (signal) cross section: σ times the mean detector efficiency
            _, eff = resolution(x, None, torch.Generator().manual_seed(int(seed) + 1))
            xsec = xsec * eff.mean(-1)
        x = resolution.apply_to_data(x, gen)
    else:
        x = ResolutionSmearing(resolution)(x, generator=gen)
    sigma = xsec.numpy()
    return MeasuredData(
        kind=problem.kind,
        events=x.numpy(),
        xsec=sigma * (1.0 + rel_err * fluct),
        xsec_err=sigma * rel_err,
        truth=np.asarray(truth, dtype=np.float64),
    )
