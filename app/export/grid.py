"""``qcf-studio export --format grid``: a run's QCF replicas as a replica grid, the form Monte Carlo PDF sets take.

``<stem>-grid/`` holds:

- ``<stem>-replicas.nc``: ``qcf_replicas`` (replica, qcf, x[, y]) and ``params_replicas`` (replica, param), replicas
  1..N as :func:`qcf_studio.engine.results.replicas.qcf_replicas` makes them (the members of a bootstrap ensemble, else
  draws of
  the members' parameter distributions: either way their spread is the run's error) and replica 0 their mean, as
  LHAPDF's ``ErrorType: replicas`` sets have it; ``qcf_true`` and ``params_true`` where known; what they are in the
  attributes.
- for 1D QCFs on x within (0, 1], one LHAPDF6 set per QCF, ``<stem>_<qcf>/`` with ``<stem>_<qcf>.info`` and
  ``<stem>_<qcf>_0000.dat`` (replica 0) ... ``_NNNN.dat``: format ``lhagrid1``, values x·q(x) (LHAPDF's xf
  convention), the file's x grid, two Q knots with the same values (the QCFs have no scale; LHAPDF's interpolators
  need at least two), one flavour: a PDG quark or gluon code for a QCF of that name (proxy1d's u → 2, d → 1), else
  81, 82, ... (PDG's codes for generator-internal objects: nothing physical). docs/results.md says more.

The folder is built in a staging folder and renamed into place whole (:class:`qcf_studio.app.export.staging.Staging`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from qcf_studio.app.catalog import load_run
from qcf_studio.app.export.staging import Staging
from qcf_studio.engine import __version__
from qcf_studio.engine.results.files import netcdf_bytes
from qcf_studio.engine.results.replicas import qcf_replicas
from qcf_studio.engine.textlimits import clip

__all__ = [
    "Q_KNOTS",
    "export_grid",
    "flavour_id",
    "lhapdf_refusal",
    "replica_dataset",
    "replica_grid",
    "write_lhapdf_set",
]

Q_KNOTS = (1.0, 10.0)  # a dummy scale (GeV): the QCFs do not depend on it
_PARTONS = {"d": 1, "u": 2, "s": 3, "c": 4, "b": 5, "t": 6, "g": 21}
GENERIC_ID = 81  # PDG: 81-100 are for a generator's internal use, so no physical particle is implied


def flavour_id(name: str, index: int) -> int:
    """The flavour code of QCF ``name`` (its ``index``-th): the PDG code of a parton of that name (``u``, ``dbar``,
    ``g``...), else ``81 + index``."""
    key = name.lower()
    if key.endswith("bar") and key[:-3] in _PARTONS and key[:-3] != "g":
        return -_PARTONS[key[:-3]]
    return _PARTONS.get(key, GENERIC_ID + index)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)[:60] or "run"


def replica_dataset(ds: xr.Dataset, source: str) -> xr.Dataset:
    """The replica grid of the run ``ds`` (from the file named ``source``): replica 0 the mean of replicas 1..N."""
    reps = qcf_replicas(ds, source)
    n = len(reps.qcf)
    qdims = ds["qcf_pred"].dims[1:]  # ("qcf", "x"[, "y"])
    coords = {"replica": np.arange(n + 1), "param": ds["param"].values, **{d: ds[d].values for d in qdims}}
    out = xr.Dataset(coords=coords)
    out["qcf_replicas"] = (("replica", *qdims), np.concatenate([reps.qcf.mean(0)[None], reps.qcf]))
    out["params_replicas"] = (("replica", "param"), np.concatenate([reps.params.mean(0)[None], reps.params]))
    what = "replica 0: the mean of replicas 1..N; replicas 1..N: "
    out["qcf_replicas"].attrs["description"] = what + reps.description
    out["params_replicas"].attrs["description"] = "the parameters of each replica (replica 0: their mean)"
    for name in ("qcf_true", "params_true"):
        if name in ds:
            out[name] = ds[name]
            out[name].attrs["description"] = "the truth the pseudo-data were generated from (a closure test)"
    a = ds.attrs
    out.attrs.update(
        {
            "title": f"qcf-studio replica grid of run {clip(str(a.get('name', '')), 100)}",
            "run": clip(str(a.get("name", "")), 100),
            "source": clip(source, 200),
            "problem": str(a["problem"]),
            "method": clip(str(a.get("method", "")), 20),
            "status": clip(str(a.get("status", "")), 20),
            "uncertainty": clip(str(a.get("uncertainty", "")), 20),
            "replica_source": reps.source,
            "replicas": n,
            "convention": "replica 0 is the mean of replicas 1..N (LHAPDF's ErrorType: replicas); the standard "
            "deviation of replicas 1..N is the run's 1 sigma error",
            "spec": str(a["spec"]),
            "qcf_studio_version": __version__,
        }
    )
    return out


def lhapdf_refusal(grid: xr.Dataset) -> str | None:
    """Why the replica grid ``grid`` has no LHAPDF sets (``None`` if it can have them)."""
    x = grid["x"].values
    if "y" in grid["qcf_replicas"].dims:
        return "its QCFs are 2D, q(x, y): LHAPDF grids are 1D in x (with a scale Q)"
    if not (np.all(x > 0) and np.all(x <= 1)):
        return f"its x grid [{x.min():g}, {x.max():g}] is not within (0, 1], where LHAPDF interpolates in log x"
    if len(x) < 4 or np.any(np.diff(x) <= 0):
        return "LHAPDF needs at least 4 increasing x knots"
    return None


def _dat(x: np.ndarray, xf: np.ndarray, pid: int, central: bool) -> str:
    """One member's ``lhagrid1`` file: one subgrid, x knots, Q knots, flavours, then xf at (x, Q), Q fastest."""
    values = "\n".join(map(repr, np.repeat(xf, len(Q_KNOTS)).tolist()))
    return (
        f"PdfType: {'central' if central else 'replica'}\nFormat: lhagrid1\n---\n"
        f"{' '.join(map(repr, x.tolist()))}\n{' '.join(map(repr, Q_KNOTS))}\n{pid}\n{values}\n---\n"
    )


def write_lhapdf_set(directory: Path, set_name: str, grid: xr.Dataset, qcf: str, pid: int) -> Path:
    """The LHAPDF6 set ``directory/set_name/`` of QCF ``qcf`` of ``grid``; returns its folder."""
    folder = directory / set_name
    folder.mkdir()
    x = grid["x"].values.astype(np.float64)
    q = grid["qcf_replicas"].sel(qcf=qcf).values
    info = {
        "SetDesc": f"qcf-studio replica grid of QCF {qcf} of problem {grid.attrs['problem']} "
        f"(run {grid.attrs['run']}): x*{qcf}(x), no scale dependence",
        "Authors": "qcf-studio export",
        "Reference": "qcf-studio (closure tests of SAGIPS-style QCF fits)",
        "Format": "lhagrid1",
        "DataVersion": 1,
        "NumMembers": len(q),
        "Flavors": [pid],
        "OrderQCD": 0,
        "ErrorType": "replicas",
        "XMin": float(x[0]),
        "XMax": float(x[-1]),
        "QMin": Q_KNOTS[0],
        "QMax": Q_KNOTS[-1],
        # qcf-studio's own keys (LHAPDF keeps unknown keys as metadata)
        "QCFName": qcf,
        "QCFProblem": grid.attrs["problem"],
        "QCFValues": f"x*{qcf}(x), the same at every Q: the QCFs have no scale",
        "QCFFlavorCode": "the PDG code of a parton of the QCF's name, else 81+index (PDG: generator-internal)",
        "QCFReplicas": f"{grid.attrs['replica_source']}: {grid['qcf_replicas'].attrs['description']}",
    }
    (folder / f"{set_name}.info").write_text(
        yaml.safe_dump(info, sort_keys=False, allow_unicode=True, default_flow_style=None, width=10_000),
        encoding="utf-8",
    )
    for member, values in enumerate(q):
        (folder / f"{set_name}_{member:04d}.dat").write_text(_dat(x, x * values, pid, member == 0), encoding="utf-8")
    return folder


def replica_grid(path: str | Path) -> xr.Dataset:
    """The replica grid of the run at ``path`` (:func:`replica_dataset`), its ``lhapdf`` attribute saying whether
    LHAPDF sets go with it; ``ValueError`` (not a run; no replicas:
    :class:`qcf_studio.engine.results.replicas.NoReplicasError`)
    or ``FileNotFoundError`` otherwise. Nothing is written."""
    grid = replica_dataset(load_run(path), str(path))
    refusal = lhapdf_refusal(grid)
    grid.attrs["lhapdf"] = f"no LHAPDF sets: {refusal}" if refusal else "one LHAPDF6 set per QCF beside this file"
    return grid


def export_grid(path: str | Path, out_dir: str | Path, grid: xr.Dataset | None = None) -> list[Path]:
    """Write ``<stem>-grid/`` for the run at ``path`` into ``out_dir`` (``grid``: its :func:`replica_grid` if made
    already); returns its NetCDF file and its LHAPDF sets' folders. Raises as :func:`replica_grid` does, before
    anything is written."""
    from qcf_studio.app.export.run import out_folder

    path, out = Path(path), Path(out_dir)
    grid = replica_grid(path) if grid is None else grid
    out_folder(out)
    stem, folder = _safe(path.stem), f"{path.stem}-grid"
    with Staging(out, folder) as staging:
        directory = staging.path(folder)
        directory.mkdir()
        nc = f"{path.stem}-replicas.nc"
        (directory / nc).write_bytes(netcdf_bytes(grid))
        names = [str(q) for q in grid["qcf"].values]
        sets = [] if grid.attrs["lhapdf"].startswith("no ") else [f"{stem}_{_safe(q)}" for q in names]
        if len({s.lower() for s in sets}) < len(sets):  # names that differ only in case or odd characters
            sets = [f"{stem}_{i + 1}_{_safe(q)}" for i, q in enumerate(names)]
        for i, (q, set_name) in enumerate(zip(names, sets)):
            write_lhapdf_set(directory, set_name, grid, q, flavour_id(q, i))
        (final,) = staging.commit([folder])
    return [final / nc, *(final / s for s in sets)]
