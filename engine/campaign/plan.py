"""What a campaign fits and where it keeps them: replica seeds and truths, each fit's spec, the campaign's folder.

Replica ``r`` of a campaign is the same pseudo-data whatever else changes (the number of replicas, the
methods, the training settings): its seed comes from ``problem.seed`` and ``r`` alone, and with
``truths: prior`` so does its truth. Each fit is an ordinary run of the engine whose spec is the
campaign's with the replica's seed and truth and the fit's method.

The folder ``<out>/<spec name>/`` holds

- ``campaign.yaml``: the spec of the campaign (a rerun with another spec is refused: its fits would not match),
  widened when a rerun asks for more replicas or another method;
- ``<method>-r<replica>.nc``: one results file per finished fit (written atomically, never overwritten);
- ``failed/``: results of fits that failed (a rerun fits them again), and files set aside as unreadable;
- ``summary.nc``: the summary (:mod:`qcf_studio.engine.campaign.summary`), replaced as fits finish.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from qcf_studio.engine.campaign.section import CampaignSpec
from qcf_studio.engine.choices import Method
from qcf_studio.engine.results.files import replace_file, write_new_file
from qcf_studio.engine.safe_yaml import YAMLRefused, load_yaml
from qcf_studio.engine.spec import Spec, SpecError, parse_spec
from qcf_studio.engine.textlimits import clip, clip_path

__all__ = ["FitKey", "CampaignPlan", "fit_files", "replica_seed", "replica_truth", "campaign_of", "FIT_FILE"]

FIT_FILE = re.compile(r"(?P<method>[a-z]+)-r(?P<replica>\d{4,})\.nc")
_SEED_TAG, _TRUTH_TAG = 0x5EED, 0x7247  # distinct streams of the replica's seed sequence


@dataclass(frozen=True, order=True)
class FitKey:
    """One fit of a campaign: replica ``replica`` fitted by ``method``."""

    replica: int
    method: str

    @property
    def stem(self) -> str:
        return f"{self.method}-r{self.replica:04d}"


def fit_files(folder: Path) -> dict[FitKey, Path]:
    """The fit files in ``folder`` (``<method>-r<replica>.nc``, regular files), by fit."""
    out = {}
    for path in sorted(folder.glob("*.nc")):
        m = FIT_FILE.fullmatch(path.name)
        if m is not None and path.is_file() and not path.is_symlink():
            out[FitKey(int(m["replica"]), m["method"])] = path
    return out


def replica_seed(seed: int, replica: int) -> int:
    """The data (and training) seed of replica ``replica`` of a campaign whose ``problem.seed`` is ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(replica), _SEED_TAG]).generate_state(1)[0] >> 1)


def replica_truth(spec: Spec, replica: int) -> dict[str, float]:
    """The truth of replica ``replica``: ``problem.truth``, or with ``truths: prior`` a uniform draw within
    ``prior_bounds`` (default: the problem's bounds)."""
    campaign = spec.campaign
    if campaign is None or campaign.truths == "fixed":
        return dict(spec.problem.truth)
    rng = np.random.default_rng(np.random.SeedSequence([int(spec.problem.seed), int(replica), _TRUTH_TAG]))
    out = {}
    for name in spec.problem.truth:  # the problem's parameter order: one uniform each, in order
        lo, hi = campaign.prior_bounds.get(name, spec.problem.bounds[name])
        out[name] = float(lo + (hi - lo) * rng.random())
    return out


def campaign_of(spec: Spec, replicas: int | None = None, methods: list[str] | None = None) -> Spec:
    """``spec`` with a campaign section: its own, or the default (fixed truth, its method); ``replicas``
    and ``methods`` override the section's (``--replicas``, ``--methods``). Validated again, so the limits
    apply."""
    raw = spec.to_dict()
    section = dict(raw.get("campaign") or {"methods": [spec.training.method]})
    if replicas is not None:
        section["replicas"] = replicas
    if methods is not None:
        section["methods"] = methods
    raw["campaign"] = section
    return parse_spec(raw)


def _comparable(spec: Spec) -> dict:
    """What must match between a campaign's folder and a rerun: all but the number of replicas, the methods
    (each method's fits are files of their own) and the number of workers."""
    d = spec.to_dict()
    d.get("campaign", {}).pop("replicas", None)
    d.get("campaign", {}).pop("methods", None)
    d.get("cluster", {}).pop("workers", None)
    d.pop("limits", None)
    return d


def _first_difference(a: object, b: object, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    return path or "spec"


class CampaignPlan:
    """The fits of campaign ``spec`` (which has a ``campaign`` section) and their files under ``out``."""

    def __init__(self, spec: Spec, out: str | Path) -> None:
        if spec.campaign is None:
            raise ValueError("a campaign plan needs a spec with a campaign section (campaign_of)")
        self.spec = spec
        self.campaign: CampaignSpec = spec.campaign
        self.folder = Path(out) / spec.name
        self.fit_specs: dict[FitKey, Spec] = {}

    @property
    def keys(self) -> list[FitKey]:
        """Every fit, replica by replica (all methods of replica 0 first)."""
        return [FitKey(r, m) for r in range(self.campaign.replicas) for m in self.campaign.methods]

    @property
    def summary_path(self) -> Path:
        return self.folder / "summary.nc"

    @property
    def spec_path(self) -> Path:
        return self.folder / "campaign.yaml"

    @property
    def failed_dir(self) -> Path:
        return self.folder / "failed"

    def fit_path(self, key: FitKey) -> Path:
        return self.folder / f"{key.stem}.nc"

    def fit_spec(self, key: FitKey) -> Spec:
        """The spec of one fit: the campaign's, with the replica's seed and truth and the fit's method (a
        likelihood fit as one deterministic member on the CPU)."""
        if key in self.fit_specs:
            return self.fit_specs[key]
        spec = copy.deepcopy(self.spec)
        spec.campaign = None
        spec.name = f"{self.spec.name}-{key.stem}"[:64]
        spec.problem.seed = replica_seed(self.spec.problem.seed, key.replica)
        spec.problem.truth = replica_truth(self.spec, key.replica)
        t = spec.training
        t.method = cast(Method, key.method)  # one of the campaign's validated methods
        if key.method == "mle":
            spec.ensemble.members, spec.ensemble.bootstrap, t.mle_reference = 1, False, False
            spec.cluster.mode, spec.cluster.ranks = "ensemble", 1
            spec.cluster.device = "cpu" if spec.cluster.device == "cuda" else spec.cluster.device
        elif "mle" in self.campaign.methods:
            t.mle_reference = False  # the campaign fits every replica by maximum likelihood anyway
        spec = parse_spec(spec.to_dict())  # an ordinary, valid spec
        self.fit_specs[key] = spec
        return spec

    def prepare(self) -> None:
        """Create the folder, or check that the campaign already in it is this spec's; raise
        :class:`~qcf_studio.engine.spec.SpecError` (``campaign``) when it holds another spec's fits."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = self.spec.to_yaml()
        if self.spec_path.exists():
            try:
                with open(self.spec_path, "rb") as f:
                    theirs = parse_spec(load_yaml(f.read(1_000_001).decode("utf-8", "replace")))
            except (SpecError, YAMLRefused, OSError) as e:
                raise SpecError(
                    "campaign",
                    f"{clip_path(self.spec_path)} is not a campaign spec ({clip(str(e))}); use another output folder",
                ) from None
            a, b = _comparable(theirs), _comparable(self.spec)
            if a != b:
                where = _first_difference(a, b)
                raise SpecError(
                    "campaign",
                    f"{clip_path(self.folder)} holds a campaign of another spec ({where} "
                    f"differs); use another output folder or spec name",
                )
            assert theirs.campaign is not None
            wider = {
                "replicas": max(theirs.campaign.replicas, self.campaign.replicas),
                "methods": theirs.campaign.methods
                + [m for m in self.campaign.methods if m not in theirs.campaign.methods],
            }
            if wider != {"replicas": theirs.campaign.replicas, "methods": theirs.campaign.methods}:
                raw = theirs.to_dict()  # the folder's spec says every replica and method it may hold
                raw["campaign"].update(wider)
                replace_file(parse_spec(raw).to_yaml().encode(), self.spec_path)
            return
        try:
            write_new_file(text.encode(), self.spec_path)
        except FileExistsError:  # another process started the same campaign a moment ago: checked next time
            pass

    def set_aside(self, path: Path, why: str) -> Path:
        """Move a file that cannot count as a finished fit into ``failed/`` (nothing is deleted)."""
        self.failed_dir.mkdir(exist_ok=True)
        for i in range(1, 10_000):
            target = self.failed_dir / f"{path.stem}-{why}-{i}{path.suffix}"
            if not target.exists():
                os.rename(path, target)
                return target
        raise FileExistsError(f"{self.failed_dir}: too many set-aside files")
