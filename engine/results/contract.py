"""The results contract checked on files from elsewhere (design.md, "Results"): :func:`check_results`."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from qcf_studio.engine.problems import problem_kinds
from qcf_studio.engine.results.fit_quality import FIT_QUALITY_ATTRS, FIT_QUALITY_DIMS
from qcf_studio.engine.safe_yaml import MAX_YAML_BYTES
from qcf_studio.engine.textlimits import shown

__all__ = ["STATUSES", "ResultsContractError", "attribute_number", "check_results"]

STATUSES = ("completed", "stopped", "failed")


class ResultsContractError(ValueError):
    """A results file that does not have the contract's shape; the message names the file and what is wrong."""


def _as_number(value: Any) -> float | None:
    """A file attribute as a float, or ``None`` if it is not one number."""
    try:
        array = np.asarray(value)
        return float(array.item()) if array.size == 1 else None
    except (TypeError, ValueError):
        return None


def attribute_number(value: Any) -> float:
    """A file attribute as a float (NaN if it is not one number)."""
    number = _as_number(value)
    return float("nan") if number is None else number


def _dims(two_d: bool) -> dict[str, tuple[str, ...]]:
    q = ("qcf", "x", "y") if two_d else ("qcf", "x")
    h = ("observable", "bin", "bin_y") if two_d else ("observable", "bin")
    return {
        "params_pred": ("member", "param"),
        "params_pred_std": ("member", "param"),
        "qcf_pred": ("member", *q),
        "qcf_pred_std": ("member", *q),
        "hist_data": h,
        "hist_gen": ("member", *h),
    }


_OPTIONAL_DIMS = {
    "params_true": ("param",),
    "params_mle": ("param",),
    "params_mle_err": ("param",),
    "params_ensemble": ("param",),
    "params_ensemble_err": ("param",),
    "pull": ("param",),
    "error_ratio": ("param",),
    "params_history": ("member", "step", "param"),
    "chi2_ndf": ("member", "observable"),
    "steps_done": ("member",),
    "resumed_from": ("member",),
    "comm_seconds": ("member",),
    "xsec_data": ("observable",),
    "xsec_data_err": ("observable",),
    **{
        m: ("member", "step")
        for m in ("loss_g", "loss_d", "d_acc_real", "d_acc_fake", "loss_xsec", "loss_d_xsec", "nll")
    },
    **FIT_QUALITY_DIMS,
}
_TEXT_ATTRS = ("spec", "name", "problem", "method", "status", "errors", "uncertainty", "versions")
_NUMBER_ATTRS = ("wall_seconds", "events_per_second", *FIT_QUALITY_ATTRS)


def check_results(ds: xr.Dataset, label: str) -> None:
    """Raise :class:`ResultsContractError` naming ``label`` and the variable or attribute when ``ds`` does not have
    the shape of the results contract (design.md, "Results") that the views and exports rely on: every
    variable with its dimensions, numbers where numbers belong, the labels of params, QCFs and observables,
    histogram edges one longer than the bins, at least one member."""

    def refuse(what: str) -> ResultsContractError:
        return ResultsContractError(f"{label}: not a results file this version can show: {what}")

    for key in _TEXT_ATTRS:
        if key in ds.attrs and not isinstance(ds.attrs[key], str):
            raise refuse(f"attribute {key!r} is not text")
    if len(ds.attrs["spec"]) > MAX_YAML_BYTES:
        raise refuse(f"attribute 'spec' has more than {MAX_YAML_BYTES:,} characters")
    for key in (*_NUMBER_ATTRS, *(k for k in ds.attrs if k.startswith("closure_"))):
        if key in ds.attrs and _as_number(ds.attrs[key]) is None:
            raise refuse(f"attribute {shown(key)} is not a number")
    if ds.attrs.get("problem") not in problem_kinds():
        raise refuse(
            f"problem {shown(ds.attrs.get('problem'))} is not registered here (a user problem: see "
            f"$QCF_STUDIO_PROBLEMS in the README)"
        )
    if "status" in ds.attrs and ds.attrs["status"] not in STATUSES:
        raise refuse(f"attribute 'status' is {shown(ds.attrs['status'])}, not one of {', '.join(STATUSES)}")
    two_d = "qcf_pred" in ds and "y" in ds["qcf_pred"].dims
    required = _dims(two_d)
    for name, dims in [*required.items(), *_OPTIONAL_DIMS.items(), *_qcf_true(two_d)]:
        if name not in ds:
            if name in required:
                raise refuse(f"variable {name!r} is missing")
            continue
        if ds[name].dims != dims:
            raise refuse(f"variable {name!r} has dimensions {shown(ds[name].dims)}, the contract says {dims}")
        if not np.issubdtype(ds[name].dtype, np.number):
            raise refuse(f"variable {name!r} is not numeric")
    for coord in ("param", "qcf", "observable", "x", *(("y",) if two_d else ())):
        if coord not in ds.coords or ds[coord].ndim != 1:
            raise refuse(f"coordinate {coord!r} is missing")
    for coord in ("x", "y", "step") if two_d else ("x", "step"):
        if coord in ds.coords and not np.issubdtype(ds[coord].dtype, np.number):
            raise refuse(f"coordinate {coord!r} is not numeric")
    if ds.sizes["member"] < 1:
        raise refuse("it has no member")
    edges = ds.get("bin_edges")
    edge_dims = ("observable", "coord", "bin_edge") if two_d else ("observable", "bin_edge")
    if edges is None or edges.dims != edge_dims or ds.sizes["bin_edge"] != ds.sizes["bin"] + 1:
        raise refuse(f"variable 'bin_edges' must have dimensions {edge_dims} with one edge more than bins")
    if two_d and (ds.sizes["coord"] != 2 or ds.sizes.get("bin_y") != ds.sizes["bin"]):
        raise refuse("2D histograms need coord = x, y and as many y bins as x bins")


def _qcf_true(two_d: bool) -> list[tuple[str, tuple[str, ...]]]:
    return [("qcf_true", ("qcf", "x", "y") if two_d else ("qcf", "x"))]
