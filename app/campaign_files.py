"""The campaigns in a runs directory (``<runs_dir>/campaigns/<name>/`` or ``<runs_dir>/<name>/``): listed,
and reopened as summaries.

No Panel imports. A campaign's folder holds ``campaign.yaml``, one results file per finished fit and,
once the driver wrote it, ``summary.nc`` (:mod:`qcf_studio.engine.campaign.plan`). Reopening prefers ``summary.nc``
when it is at least as new as the newest fit; otherwise (a server stopped mid-campaign, a summary that
cannot be read) the summary is rebuilt from the fit files, read-only: nothing in the folder is moved or
written, so a campaign another process is running is never disturbed. Every file is opened through
:mod:`qcf_studio.engine.data.safe_hdf5` with size limits and checked before anything is drawn from it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import xarray as xr

from qcf_studio.engine.campaign.plan import FIT_FILE, CampaignPlan, FitKey, fit_files
from qcf_studio.engine.campaign.summary import build_summary, read_fit
from qcf_studio.engine.data.safe_hdf5 import open_netcdf
from qcf_studio.engine.safe_yaml import YAMLRefused, load_yaml
from qcf_studio.engine.spec import METHODS, Spec, SpecError, parse_spec
from qcf_studio.engine.textlimits import clip, clip_path

__all__ = [
    "CampaignInfo",
    "NotACampaignError",
    "CAMPAIGN_KIND",
    "campaigns_dir",
    "list_campaigns",
    "read_campaign_spec",
    "load_summary",
    "open_campaign",
    "fit_path",
    "rebuild_summary",
]

CAMPAIGN_KIND = "qcf-studio campaign"
MAX_SUMMARY_BYTES = 2**28  # summary.nc: per-replica estimates and per-method QCF curves (a few MiB at most)
MAX_SPEC_BYTES = 1_000_000

# What the views and exports read from a summary: variable -> its dimensions (the QCF curves may add y).
_REQUIRED = {
    "pull": ("method", "replica", "param"),
    "estimate": ("method", "replica", "param"),
    "error": ("method", "replica", "param"),
    "status": ("method", "replica"),
    "wall_seconds": ("method", "replica"),
    "n_fits": ("method",),
    "coverage": ("method", "param", "level"),
    "coverage_1sigma": ("method", "param"),
    "coverage_1sigma_interval": ("method", "param", "bound"),
    "r_bv": ("method", "param"),
    "r_bv_interval": ("method", "param", "bound"),
    "pull_mean": ("method", "param"),
    "pull_mean_interval": ("method", "param", "bound"),
    "pull_width": ("method", "param"),
    "pull_width_interval": ("method", "param", "bound"),
}


class NotACampaignError(ValueError):
    """A folder or file that is not a qcf-studio campaign (or cannot be read as one)."""


def campaigns_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "campaigns"


@dataclass(frozen=True)
class CampaignInfo:
    """One campaign folder as the selector lists it; ``error`` set (and the rest blank) when unreadable."""

    folder: Path
    name: str
    problem: str = ""
    methods: tuple[str, ...] = ()
    replicas: int = 0
    completed: int = 0  # fit files in the folder
    modified: datetime = datetime.fromtimestamp(0)
    has_summary: bool = False
    error: str = ""

    @property
    def total(self) -> int:
        return self.replicas * len(self.methods)

    @property
    def label(self) -> str:
        if self.error:
            return clip(f"{self.name} (unreadable)", 120)
        state = "complete" if self.completed >= self.total else "partial"
        return clip(
            f"{self.name} · {self.problem} · {'+'.join(self.methods)} · {self.completed}/{self.total} fits "
            f"({state}) · {self.modified:%Y-%m-%d %H:%M}",
            160,
        )


def read_campaign_spec(folder: Path) -> Spec:
    """The validated spec in ``folder/campaign.yaml``; :class:`NotACampaignError` otherwise."""
    path = folder / "campaign.yaml"
    try:
        with open(path, "rb") as f:
            content = f.read(MAX_SPEC_BYTES + 1)
        if len(content) > MAX_SPEC_BYTES:
            raise NotACampaignError(f"{clip_path(path)}: more than {MAX_SPEC_BYTES:,} bytes")
        spec = parse_spec(load_yaml(content.decode("utf-8", "replace")))
    except (OSError, YAMLRefused, SpecError) as e:
        raise NotACampaignError(f"{clip_path(path)}: not a campaign spec ({clip(str(e))})") from None
    if spec.campaign is None:
        raise NotACampaignError(f"{clip_path(path)}: no campaign section")
    return spec


def _fit_files(folder: Path) -> dict[FitKey, Path]:
    return {k: p for k, p in fit_files(folder).items() if k.method in METHODS}


def _spec_of_files(spec: Spec, fits: dict[FitKey, Path]) -> Spec:
    """``spec`` (from campaign.yaml, written by the first session) widened to the fits in the folder: a rerun
    may have asked for more replicas or other methods."""
    assert spec.campaign is not None
    methods = list(spec.campaign.methods) + sorted({k.method for k in fits} - set(spec.campaign.methods))
    replicas = max([spec.campaign.replicas] + [k.replica + 1 for k in fits])
    if (replicas, methods) == (spec.campaign.replicas, spec.campaign.methods):
        return spec
    raw = spec.to_dict()
    raw["campaign"].update(replicas=replicas, methods=methods)
    try:
        return parse_spec(raw)
    except SpecError:  # beyond the spec's limits: the fits campaign.yaml names
        return spec


_infos: dict[Path, tuple[tuple, CampaignInfo]] = {}  # folder -> (signature, info): the selector polls
_infos_lock = threading.Lock()


def _signature(folder: Path) -> tuple:
    # Fits and summaries are renamed into place, so the folder's own mtime changes with each of them.
    return folder.stat().st_mtime_ns, (folder / "campaign.yaml").stat().st_mtime_ns


def _read_info(folder: Path) -> CampaignInfo:
    modified = datetime.fromtimestamp(folder.stat().st_mtime)
    try:
        spec = read_campaign_spec(folder)
    except NotACampaignError as e:
        return CampaignInfo(folder, folder.name, modified=modified, error=str(e))
    fits = _fit_files(folder)
    spec = _spec_of_files(spec, fits)
    assert spec.campaign is not None
    fits = {k: p for k, p in fits.items() if k.method in spec.campaign.methods and k.replica < spec.campaign.replicas}
    return CampaignInfo(
        folder,
        folder.name,
        spec.problem.kind,
        tuple(spec.campaign.methods),
        spec.campaign.replicas,
        len(fits),
        modified,
        (folder / "summary.nc").is_file(),
    )


def list_campaigns(runs_dir: str | Path) -> list[CampaignInfo]:
    """Every campaign folder (one with a ``campaign.yaml``) of ``<runs_dir>/campaigns``, where the dashboard
    keeps its campaigns, and of ``<runs_dir>`` itself, where ``qcf-studio campaign --out <runs_dir>`` puts
    them; newest first (re-read only when a folder changed: fits and summaries are renamed into place)."""
    roots = [r for r in (campaigns_dir(runs_dir), Path(runs_dir)) if r.is_dir()]
    out = []
    for folder in (f for root in roots for f in root.iterdir()):
        try:
            if not (folder.is_dir() and (folder / "campaign.yaml").is_file()):
                continue
            sig = _signature(folder)
        except OSError:  # removed while listing
            continue
        with _infos_lock:
            cached = _infos.get(folder)
        if cached is None or cached[0] != sig:
            cached = (sig, _read_info(folder))
            with _infos_lock:
                _infos[folder] = cached
        out.append(cached[1])
    listed = {i.folder for i in out}
    with _infos_lock:  # forget folders that are gone
        for gone in [f for f in _infos if f.parent in roots and f not in listed]:
            del _infos[gone]
    out.sort(key=lambda i: (i.modified, i.name), reverse=True)
    return out


def load_summary(path: str | Path) -> xr.Dataset:
    """A campaign's ``summary.nc``, loaded and checked: the kind attribute and every variable the views draw."""
    path = Path(path)
    label = clip_path(path, 200)
    try:
        ds = open_netcdf(path, label, max_file_bytes=MAX_SUMMARY_BYTES, max_data_bytes=MAX_SUMMARY_BYTES)
    except (ValueError, OSError) as e:
        raise NotACampaignError(f"cannot be read as a campaign summary: {clip(str(e))}") from None
    if ds.attrs.get("kind") != CAMPAIGN_KIND:
        raise NotACampaignError(f"{label}: not a campaign summary (attribute kind is not {CAMPAIGN_KIND!r})")
    for name, dims in _REQUIRED.items():
        if name not in ds or ds[name].dims != dims:
            raise NotACampaignError(f"{label}: variable {name!r} missing or without dimensions {dims}")
        if name != "status" and not np.issubdtype(ds[name].dtype, np.number):
            raise NotACampaignError(f"{label}: variable {name!r} is not numeric")
    dof = ds.get("error_dof")  # optional: summaries written before it was kept draw N(0, 1)
    if dof is not None and (dof.dims != ("method", "replica") or not np.issubdtype(dof.dtype, np.number)):
        raise NotACampaignError(f"{label}: variable 'error_dof' is not numbers over (method, replica)")
    xi = ds.get("qcf_xi_1sigma")
    if xi is None or xi.dims[:3] != ("method", "qcf", "x") or xi.ndim > 4 or not np.issubdtype(xi.dtype, np.number):
        raise NotACampaignError(f"{label}: variable 'qcf_xi_1sigma' missing or not (method, qcf, x[, y])")
    for coord in ("level", "x", "replica"):
        if not np.issubdtype(ds[coord].dtype, np.number):
            raise NotACampaignError(f"{label}: coordinate {coord!r} is not numeric")
    return ds


def rebuild_summary(folder: Path, spec: Spec) -> xr.Dataset:
    """The summary of the fit files in ``folder`` (read-only: :func:`qcf_studio.engine.campaign.summary.read_fit`), for
    campaign ``spec``."""
    fits = _fit_files(folder)
    spec = _spec_of_files(spec, fits)
    assert spec.campaign is not None
    plan = CampaignPlan(spec, folder.parent)
    records = {
        k: read_fit(p, k, plan)
        for k, p in fits.items()
        if k.replica < spec.campaign.replicas and k.method in spec.campaign.methods
    }
    return build_summary(plan, records)


def open_campaign(folder: str | Path) -> tuple[xr.Dataset, bool]:
    """A campaign folder's summary and whether it was rebuilt from the fit files (``summary.nc`` missing,
    older than a fit, or unreadable). Raises :class:`NotACampaignError`."""
    folder = Path(folder)
    spec = read_campaign_spec(folder)
    summary = folder / "summary.nc"
    fits = _fit_files(folder)
    try:
        newest = max((p.stat().st_mtime_ns for p in fits.values()), default=0)
        if summary.is_file() and summary.stat().st_mtime_ns >= newest:
            return load_summary(summary), False
    except (NotACampaignError, OSError):
        pass
    return rebuild_summary(folder, spec), True


def fit_path(folder: Path, method: str, replica: int) -> Path | None:
    """The results file of fit (``method``, ``replica``) in ``folder``, if there is one (names from a summary
    file are checked against the fit files' pattern, so they cannot point outside the folder)."""
    name = f"{FitKey(int(replica), str(method)).stem}.nc"
    path = folder / name
    return path if FIT_FILE.fullmatch(name) and path.is_file() else None
