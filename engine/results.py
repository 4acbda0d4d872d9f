"""Results of a run as an xarray Dataset (the results contract), closure metrics, atomic NetCDF I/O."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from engine.problems import get_problem
from engine.pseudodata import MeasuredData
from engine.spec import Spec
from engine.training import MemberResult, data_histograms

__all__ = ["build_results", "closure_metrics", "write_netcdf_atomic", "package_versions"]

_PACKAGES = ("torch", "numpy", "xarray", "h5netcdf", "dask", "distributed", "panel", "holoviews", "bokeh")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _overall_status(members: Sequence[MemberResult]) -> str:
    statuses = {m.status for m in members}
    if "failed" in statuses:
        return "failed"
    return "stopped" if "stopped" in statuses else "completed"


def build_results(
    spec: Spec,
    data: MeasuredData,
    members: Sequence[MemberResult],
    wall_seconds: float,
    qcf_x: np.ndarray,
) -> xr.Dataset:
    """Assemble member results into the contract's Dataset (see design.md, "Results")."""
    problem = get_problem(spec.problem.kind)
    members = sorted(members, key=lambda m: m.member)
    steps = sorted({s for m in members for s in m.metrics.get("step", [])})
    step_index = {s: i for i, s in enumerate(steps)}
    metric_names = ["loss_g", "loss_d", "d_acc_real", "d_acc_fake", "loss_xsec", "loss_d_xsec"]
    metric_arrays = {n: np.full((len(members), len(steps)), np.nan) for n in metric_names}
    for i, m in enumerate(members):
        for n in metric_names:
            for s, v in zip(m.metrics.get("step", []), m.metrics.get(n, [])):
                metric_arrays[n][i, step_index[s]] = v

    edges, hist_data = data_histograms(data)
    ds = xr.Dataset(
        coords={
            "member": [m.member for m in members],
            "step": np.asarray(steps, dtype=np.int64),
            "param": list(problem.param_names),
            "qcf": list(problem.qcf_names),
            "x": qcf_x,
            "observable": list(problem.observable_names),
            "bin": np.arange(edges.shape[1] - 1),
        }
    )
    for n, arr in metric_arrays.items():
        ds[n] = (("member", "step"), arr)
    ds["params_pred"] = (("member", "param"), np.stack([m.params_pred for m in members]))
    ds["params_pred_std"] = (("member", "param"), np.stack([m.params_pred_std for m in members]))
    ds["qcf_pred"] = (("member", "qcf", "x"), np.stack([m.qcf_pred for m in members]))
    ds["qcf_pred_std"] = (("member", "qcf", "x"), np.stack([m.qcf_pred_std for m in members]))
    ds["hist_data"] = (("observable", "bin"), hist_data)
    ds["hist_gen"] = (("member", "observable", "bin"), np.stack([m.hist_gen for m in members]))
    ds["bin_edges"] = (("observable", "bin_edge"), edges)
    ds["xsec_data"] = (("observable",), data.xsec)
    ds["xsec_data_err"] = (("observable",), data.xsec_err)
    ds["steps_done"] = (("member",), np.asarray([m.steps_done for m in members]))
    if data.truth is not None:
        ds["params_true"] = (("param",), np.asarray(data.truth))
        truth = torch.as_tensor(data.truth, dtype=torch.float64)[None]
        x = torch.as_tensor(qcf_x, dtype=torch.float64)
        ds["qcf_true"] = (("qcf", "x"), problem.qcfs(truth, x)[0].numpy())

    events = sum(m.events_processed for m in members)
    ds.attrs.update(
        {
            "spec": spec.to_yaml(),
            "name": spec.name,
            "problem": spec.problem.kind,
            "method": spec.training.method,
            "status": _overall_status(members),
            "wall_seconds": float(wall_seconds),
            "events_per_second": float(events / wall_seconds) if wall_seconds > 0 else 0.0,
            "versions": json.dumps(package_versions()),
        }
    )
    errors = [m.error for m in members if m.error]
    if errors:
        ds.attrs["errors"] = "\n".join(errors)
    if data.truth is not None:
        ds.attrs.update(closure_metrics(ds, core=problem.core_range))
    return ds


def closure_metrics(ds: xr.Dataset, core: tuple[float, float]) -> dict[str, float | int]:
    """Closure numbers of a result with known truth (floats, so they fit in NetCDF attributes).

    The ensemble's parameter uncertainty combines the spread of each member's generator and the
    spread between members: ``σ² = mean(σ_m²) + var(mean_m)``; the same for QCFs pointwise.
    """
    mean = ds["params_pred"].mean("member")
    var = (ds["params_pred_std"] ** 2).mean("member")
    if ds.sizes["member"] > 1:
        var = var + ds["params_pred"].var("member", ddof=1)
    pulls = (mean - ds["params_true"]) / np.sqrt(var)
    q_mean = ds["qcf_pred"].mean("member")
    q_var = (ds["qcf_pred_std"] ** 2).mean("member")
    if ds.sizes["member"] > 1:
        q_var = q_var + ds["qcf_pred"].var("member", ddof=1)
    in_core = (ds["x"] >= core[0]) & (ds["x"] <= core[1])
    truth = ds["qcf_true"].where(in_core, drop=True)
    dev_sigma = np.abs(q_mean.where(in_core, drop=True) - truth) / np.sqrt(q_var.where(in_core, drop=True))
    rel = np.abs(q_mean.where(in_core, drop=True) / truth - 1.0)
    max_pull = float(np.abs(pulls).max())
    max_dev = float(dev_sigma.max())
    return {
        "closure_max_abs_pull": max_pull,
        "closure_max_qcf_dev_sigma": max_dev,
        "closure_max_qcf_rel_dev": float(rel.max()),
        "closure_passed": int(max_pull <= 3.0 and max_dev <= 2.0),
    }


def write_netcdf_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` with h5netcdf to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".nc.part", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
