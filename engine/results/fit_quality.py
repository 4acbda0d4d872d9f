"""The likelihood fit's MINUIT summary in a results file, and what it says in words.

A run with ``method: mle`` stores it per member: ``fit_valid``, ``fit_edm``, ``fit_calls`` (member) and
``params_at_bound``, ``params_minos_lower``, ``params_minos_upper`` (member, param). A GAN run with a likelihood
reference stores the reference's: attributes ``mle_valid``, ``mle_edm``, ``mle_calls`` and variables
``params_mle_at_bound``, ``params_mle_minos_lower``, ``params_mle_minos_upper`` (param). All are optional: files
written before iminuit became the minimiser have none of them. MINOS errors are NaN where MINOS did not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from qcf_studio.engine.gan.config import MemberResult

__all__ = ["FIT_QUALITY_DIMS", "FIT_QUALITY_ATTRS", "fit_quality", "fit_quality_findings"]

FIT_QUALITY_DIMS: dict[str, tuple[str, ...]] = {
    "fit_valid": ("member",),
    "fit_edm": ("member",),
    "fit_calls": ("member",),
    **{f"params_{k}": ("member", "param") for k in ("at_bound", "minos_lower", "minos_upper")},
    **{f"params_mle_{k}": ("param",) for k in ("at_bound", "minos_lower", "minos_upper")},
}
FIT_QUALITY_ATTRS = ("mle_valid", "mle_edm", "mle_calls")


def _per_param(r: MemberResult, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    at = np.zeros(n, dtype=bool) if r.at_bound is None else np.asarray(r.at_bound, dtype=bool)
    minos = np.full((n, 2), np.nan) if r.minos_errors is None else np.asarray(r.minos_errors, dtype=np.float64)
    return at.astype(np.int8), minos[:, 0], minos[:, 1]


def fit_quality(
    members: Sequence[MemberResult], reference: MemberResult | None, n_params: int
) -> tuple[dict[str, Any], dict[str, float | int]]:
    """Variables (name → (dims, array)) and attributes of the MINUIT summaries of ``members`` (when every one is
    a likelihood fit) and of ``reference``. Flags are stored as 0/1 (int8)."""
    variables: dict[str, Any] = {}
    attrs: dict[str, float | int] = {}
    if members and all(m.fit_valid is not None for m in members):
        variables["fit_valid"] = (("member",), np.asarray([int(bool(m.fit_valid)) for m in members], dtype=np.int8))
        variables["fit_edm"] = (("member",), np.asarray([np.nan if m.fit_edm is None else m.fit_edm for m in members]))
        variables["fit_calls"] = (("member",), np.asarray([m.fit_calls or 0 for m in members], dtype=np.int64))
        rows = [_per_param(m, n_params) for m in members]
        for i, key in enumerate(("at_bound", "minos_lower", "minos_upper")):
            variables[f"params_{key}"] = (("member", "param"), np.stack([r[i] for r in rows]))
    if reference is not None and reference.fit_valid is not None:
        attrs = {
            "mle_valid": int(bool(reference.fit_valid)),
            "mle_edm": float(np.nan if reference.fit_edm is None else reference.fit_edm),
            "mle_calls": int(reference.fit_calls or 0),
        }
        for key, value in zip(("at_bound", "minos_lower", "minos_upper"), _per_param(reference, n_params)):
            variables[f"params_mle_{key}"] = (("param",), value)
    return variables, attrs


def _bound_words(ds: xr.Dataset, at: xr.DataArray, lower: xr.DataArray, upper: xr.DataArray) -> str:
    """``Nu (1.9875, MINOS −0.048/+0.000)`` for each flagged parameter."""
    parts = []
    for p in ds["param"].values[at.values.astype(bool)]:
        lo, hi = float(lower.sel(param=p)), float(upper.sel(param=p))
        minos = f", MINOS {lo:+.3g}/{hi:+.3g}" if np.isfinite(lo) and np.isfinite(hi) else ""
        parts.append(f"{p}{minos}".replace("-", "−"))
    return ", ".join(parts)


def fit_quality_findings(ds: xr.Dataset) -> tuple[bool, str] | None:
    """Whether the result's likelihood fit (its members with ``method: mle``, else its reference) is valid with no
    parameter at a bound, and a sentence saying so; ``None`` when the file holds no MINUIT summary."""
    if "fit_valid" in ds:
        what = "The likelihood fit"
        valid = bool(ds["fit_valid"].all())
        edm, calls = float(ds["fit_edm"].max()), int(ds["fit_calls"].sum())
        at = ds["params_at_bound"].any("member")
        lower, upper = ds["params_minos_lower"].isel(member=0), ds["params_minos_upper"].isel(member=0)
    elif "mle_valid" in ds.attrs and "params_mle_at_bound" in ds:
        what = "The likelihood reference fit"
        valid = bool(int(ds.attrs["mle_valid"]))
        edm, calls = float(ds.attrs.get("mle_edm", np.nan)), int(ds.attrs.get("mle_calls", 0))
        at = ds["params_mle_at_bound"] != 0
        lower, upper = ds["params_mle_minos_lower"], ds["params_mle_minos_upper"]
    else:
        return None
    state = "converged to a valid minimum" if valid else "is NOT VALID (MIGRAD's minimum or HESSE's errors failed)"
    text = f"{what} (MINUIT: MIGRAD, HESSE) {state}: EDM {edm:.2g}, {calls} NLL calls."
    if bool(at.any()):
        text += (
            f" Parameters at a bound of their range: {_bound_words(ds, at, lower, upper)}; their HESSE errors are "
            "not reliable there (a MINOS interval, where given, is), and the truth may lie outside the range."
        )
    else:
        text += " No parameter is at a bound."
    return valid and not bool(at.any()), text
