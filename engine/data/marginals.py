"""x-marginals of 2D densities, for the views that draw them along x (live plots, the Runs and Compare tabs,
exported figures): a QCF tabulated on (x, y) integrated over y by the trapezoid rule, and a normalised 2D
histogram summed over its y bins times their widths. 1D densities are returned as they are.

:func:`marginal_x` takes histograms as the engine makes them (numpy); :func:`histogram_marginal_x` and
:func:`qcf_marginal_x` take a results Dataset's variables (xarray) and compute the same.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["marginal_x", "histogram_marginal_x", "qcf_marginal_x"]


def marginal_x(hist: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The x-marginal ``(…, O, bins)`` of normalised histograms ``(…, O, bins[, bins])`` with bin edges
    ``(O, D, bins + 1)``: in 2D (``D == 2``) the sum over y of density × y-bin width; 1D histograms as they are."""
    if edges.shape[1] == 1:
        return hist
    return (hist * np.diff(edges[:, 1], axis=-1)[:, None, :]).sum(axis=-1)


def histogram_marginal_x(hist: xr.DataArray, bin_edges: xr.DataArray) -> xr.DataArray:
    """:func:`marginal_x` of a results file's normalised histograms ``hist_data`` or ``hist_gen``
    (…, observable, bin[, bin_y]) with its ``bin_edges`` (observable[, coord], bin_edge), coord = x, y."""
    if "bin_y" not in hist.dims:
        return hist
    edges = bin_edges.transpose("observable", "coord", "bin_edge").values
    return xr.apply_ufunc(
        marginal_x,
        hist,
        kwargs={"edges": edges},
        input_core_dims=[["observable", "bin", "bin_y"]],
        output_core_dims=[["observable", "bin"]],
    )


def qcf_marginal_x(values: xr.DataArray) -> xr.DataArray:
    """∫ dy (trapezoid rule on the ``y`` coordinate) of a QCF-like array with dims (…, x, y); without ``y``
    (a 1D QCF) the array as it is."""
    return values.integrate("y") if "y" in values.dims else values
