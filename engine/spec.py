"""The run specification: a versioned YAML document, validated before anything is dispatched.

Unknown keys are errors, every error names the field (``problem.truth.Nu``) and what is wrong,
and a validated :class:`Spec` is frozen into every result file as YAML. The sections' fields and types are in
:mod:`qcf_studio.engine.spec_sections` (the detector's in :mod:`qcf_studio.engine.spec_detector`); here are the checks
that need more
than one field or the problem (:mod:`qcf_studio.engine.problem_catalog`). Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from pydantic import with_config

from qcf_studio.engine.campaign.section import CampaignSpec, parse_campaign
from qcf_studio.engine.choices import CLUSTER_MODES, DEVICES, GRID_SPACING_CHOICES, METHODS, SCHEDULES
from qcf_studio.engine.problem_catalog import problem_info, problem_kinds
from qcf_studio.engine.safe_yaml import MAX_YAML_BYTES, YAMLRefused, load_yaml
from qcf_studio.engine.spec_data import parse_columns, parse_xsec
from qcf_studio.engine.spec_detector import detector_settings, parse_detector
from qcf_studio.engine.spec_sections import (
    ClusterSpec,
    DetectorSpec,
    EnsembleSpec,
    LimitsSpec,
    ProblemSpec,
    TrainingSpec,
)
from qcf_studio.engine.specfields import SECTION_CONFIG, OptionalFlag, SpecError, at_most, fill_section, number
from qcf_studio.engine.textlimits import clip_path, shown

__all__ = [
    "Spec",
    "SpecError",
    "LimitsSpec",
    "load_spec",
    "parse_spec",
    "parse_spec_text",
    "default_spec",
    "METHODS",
    "CLUSTER_MODES",
    "SCHEDULES",
    "DEVICES",
    "FIELD_CHOICES",
    "OPTIONAL_BOOL_FIELDS",
    "MAX_PATH_CHARS",
]

SPEC_VERSION = 1
MIN_BOOTSTRAP_MEMBERS = 4  # fewer give an error estimate with too few degrees of freedom to judge pulls by
MAX_PATH_CHARS = 4096  # problem.data (Linux's PATH_MAX)
# Fields that take one of a fixed set of values (problem.kind: the registered problems), for forms.
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "training.method": METHODS,
    "cluster.mode": CLUSTER_MODES,
    "cluster.schedule": SCHEDULES,
    "cluster.device": DEVICES,
    "training.grid_spacing": GRID_SPACING_CHOICES,
}


@with_config(SECTION_CONFIG)
@dataclass
class Spec:
    version: int = SPEC_VERSION
    """The spec format's version."""
    name: str = "closure"
    """The run's name: 1-64 letters, digits, '.', '_' or '-' (results go to <name>-<time>.nc)."""
    problem: ProblemSpec = field(default_factory=ProblemSpec)
    """The problem, its truth, bounds and measured data."""
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    """Detector effects: resolution smearing, acceptance, background, a learned surrogate."""
    training: TrainingSpec = field(default_factory=TrainingSpec)
    """The fit: method and GAN hyperparameters."""
    ensemble: EnsembleSpec = field(default_factory=EnsembleSpec)
    """Ensemble members (and bootstrap replicas)."""
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    """Where and how members train (Dask workers, devices, data-parallel ranks)."""
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    """Upper bounds on sizes that validation checks (a spec may raise them; the dashboard may not)."""
    campaign: CampaignSpec | None = None
    """Many pseudo-data replicas, each fitted by every method (engine.campaign); null: one run."""

    def truth_values(self) -> list[float]:
        """The truth as a list in the problem's parameter order."""
        return list(self.problem.truth.values())

    def bounds_values(self) -> tuple[list[float], list[float]]:
        """Lower and upper bounds of the generator's output, in the problem's parameter order."""
        pairs = list(self.problem.bounds.values())
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        effects = self.detector.section()  # without null keys, as a spec writes them
        d["detector"] = {k: effects.get(k) for k in d["detector"]}
        d["training"] = {"method": d["training"].pop("method"), **d["training"]}
        if self.limits == LimitsSpec():  # the usual case: the limits go without saying
            del d["limits"]
        if self.campaign is None:
            del d["campaign"]
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- validation --------------------------------------------------------------------------------


def parse_spec(raw: Any, base_dir: Path | None = None, max_limits: LimitsSpec | None = None) -> Spec:
    """Validate a spec given as a mapping (parsed YAML) and return it; raise :class:`SpecError`.

    ``max_limits``: the most a spec's ``limits`` section may raise the limits to (the dashboard passes
    the defaults, so specs typed in a browser cannot raise them); ``None``: no bound (the command line).
    Whether ``problem.data`` is a readable file of measured data is checked where it is read
    (:func:`qcf_studio.engine.run.runner.measured_data`, once, where the run starts), not here: workers are sent this
    :class:`Spec` and the data read there, and never open the file themselves. Imports no torch.
    """
    if not isinstance(raw, dict):
        raise SpecError("spec", "expected a mapping of sections (problem, training, ...)")
    allowed = {f.name for f in fields(Spec)}
    for key in raw:
        if key not in allowed:
            raise SpecError(str(key), f"unknown section; allowed: {', '.join(sorted(allowed))}")
    version = raw.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise SpecError("version", f"unsupported spec version {shown(version)}; this tool reads version {SPEC_VERSION}")
    name = raw.get("name", Spec.name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise SpecError("name", f"use 1-64 letters, digits, '.', '_' or '-', got {shown(name)}")
    limits = _parse_limits(raw.get("limits"), max_limits)
    problem = _parse_problem(raw.get("problem") or {}, base_dir)
    detector = parse_detector(raw.get("detector"))
    detector_settings(detector, problem_info(problem.kind).domain)  # lists of one value per coordinate
    spec = Spec(name=name, problem=problem, detector=detector, limits=limits)
    spec.training = t = fill_section("training", TrainingSpec, raw.get("training"))
    if 0 < t.grid_points < 16:
        raise SpecError("training.grid_points", f"must be 0 (problem default) or at least 16, got {t.grid_points}")
    spec.ensemble = fill_section("ensemble", EnsembleSpec, raw.get("ensemble"))
    _check_methods(spec)
    spec.cluster = fill_section("cluster", ClusterSpec, raw.get("cluster"))
    _check_cluster(spec.cluster, t.method)
    _check_limits(spec)
    if raw.get("campaign") is not None:
        spec.campaign = _parse_campaign(spec, raw["campaign"])
    return spec


def _unsupported_by_mle(detector: DetectorSpec) -> str | None:
    """The first detector effect the likelihood fit does not model (it models resolution smearing only)."""
    return next((k for k in ("acceptance", "background", "surrogate") if getattr(detector, k) is not None), None)


def _check_methods(spec: Spec) -> None:
    t, ensemble = spec.training, spec.ensemble
    if t.method == "mle" or t.mle_reference:
        unsupported = _unsupported_by_mle(spec.detector)
        if unsupported:
            field = "training.method" if t.method == "mle" else "training.mle_reference"
            raise SpecError(field, f"the likelihood fit models resolution smearing only, not detector.{unsupported}")
    if t.method == "mle" and ensemble.bootstrap:
        raise SpecError("ensemble.bootstrap", "an mle fit has Hessian errors; bootstrap replicas are for gan ensembles")
    if ensemble.bootstrap and ensemble.members < MIN_BOOTSTRAP_MEMBERS:
        raise SpecError(
            "ensemble.members",
            f"bootstrap errors are the spread of the members' estimates: use at least "
            f"{MIN_BOOTSTRAP_MEMBERS}, got {ensemble.members}",
        )
    if t.method == "mle" and ensemble.members != 1:
        raise SpecError("ensemble.members", f"an mle fit is deterministic: use 1, got {ensemble.members}")


def _parse_campaign(spec: Spec, raw: Any) -> CampaignSpec:
    campaign = parse_campaign(raw, spec.problem.bounds, METHODS, spec.training.method, spec.limits.replicas)
    if spec.problem.data is not None:
        raise SpecError(
            "campaign", "a campaign fits pseudo-data fluctuated from a known truth; problem.data must be null"
        )
    if "mle" in campaign.methods and (unsupported := _unsupported_by_mle(spec.detector)):
        raise SpecError(
            "campaign.methods", f"the likelihood fit models resolution smearing only, not detector.{unsupported}"
        )
    return campaign


def _parse_limits(raw: Any, max_limits: LimitsSpec | None) -> LimitsSpec:
    limits: LimitsSpec = fill_section("limits", LimitsSpec, raw)
    for f in fields(LimitsSpec) if max_limits is not None else ():
        if getattr(limits, f.name) > getattr(max_limits, f.name):
            raise SpecError(
                f"limits.{f.name}",
                f"may be at most {getattr(max_limits, f.name):,} here; larger runs "
                f"go through the command line (qcf-studio run)",
            )
    return limits


def _check_limits(spec: Spec) -> None:
    """Everything that sizes memory or time against :class:`LimitsSpec`, before anything is dispatched."""
    lim, t, c = spec.limits, spec.training, spec.cluster
    at_most("problem.events", spec.problem.events, lim.events)
    at_most("training.steps", t.steps, lim.steps)
    at_most("ensemble.members", spec.ensemble.members, lim.members)
    at_most("cluster.ranks", c.ranks, lim.ranks)
    at_most("cluster.workers", c.workers, lim.workers)
    dims = problem_info(spec.problem.kind).event_dims
    if t.grid_points**dims > lim.grid_cells:
        raise SpecError(
            "training.grid_points",
            f"{t.grid_points}^{dims} cells are more than the limit of "
            f"{lim.grid_cells:,}; a spec may raise it with limits.grid_cells",
        )
    at_most("training.events_per_param", t.batch_params * t.events_per_param, lim.events_per_step, "events_per_step")
    for key in ("gen_width", "disc_width", "noise_dim"):
        at_most(f"training.{key}", getattr(t, key), lim.network_width, "network_width")
    for key in ("gen_depth", "disc_depth"):
        at_most(f"training.{key}", getattr(t, key), lim.network_depth, "network_depth")
    at_most("training.metrics_every", t.steps // t.metrics_every, lim.metric_points, "metric_points")
    at_most("training.snapshot_every", t.steps // t.snapshot_every, lim.snapshots, "snapshots")


def _check_cluster(c: ClusterSpec, method: str) -> None:
    # Whether the cluster has a worker for every rank is checked against the real cluster when a run starts.
    if c.device == "cuda" and method == "mle":
        raise SpecError("cluster.device", "the maximum-likelihood fit runs on the CPU; use auto or cpu, got cuda")
    if c.mode == "ensemble" and c.ranks != 1:
        raise SpecError(
            "cluster.ranks", f"ranks share one generator in mode data_parallel; ensemble mode has 1, got {c.ranks}"
        )
    if c.mode == "data_parallel" and method != "gan":
        raise SpecError(
            "cluster.mode", f"data_parallel shares generator gradients: it needs training.method gan, got {method}"
        )
    if c.schedule == "grouped" and c.ranks % c.group_size:
        raise SpecError(
            "cluster.group_size", f"must divide cluster.ranks ({c.ranks}) into equal groups, got {c.group_size}"
        )


def _per_parameter(raw: dict, key: str, what: str, names: tuple[str, ...], kind: str) -> list[tuple[str, str, Any]]:
    """``(path, name, value)`` of the mapping ``problem.<key>``; raises for a non-mapping or an unknown name."""
    mapping = raw.get(key) or {}
    if not isinstance(mapping, dict):
        raise SpecError(f"problem.{key}", f"expected a mapping of parameter: {what}, got {shown(mapping)}")
    for name in mapping:
        if name not in names:
            raise SpecError(f"problem.{key}.{name}", f"unknown parameter; {kind} has {', '.join(names)}")
    return [(f"problem.{key}.{name}", name, value) for name, value in mapping.items()]


def _parse_problem(raw: Any, base_dir: Path | None) -> ProblemSpec:
    if not isinstance(raw, dict):
        raise SpecError("problem", f"expected a mapping, got {shown(raw)}")
    kind = raw.get("kind", ProblemSpec.kind)
    try:
        info = problem_info(kind if isinstance(kind, str) else "")
    except KeyError:
        raise SpecError(
            "problem.kind", f"unknown problem {shown(kind)}; choose one of {', '.join(problem_kinds())}"
        ) from None
    rest = {k: v for k, v in raw.items() if k not in ("truth", "bounds", "data", "columns", "xsec")}
    target: ProblemSpec = fill_section("problem", ProblemSpec, rest)

    lo, hi = dict(zip(info.param_names, info.lo)), dict(zip(info.param_names, info.hi))
    for path, name, pair in _per_parameter(raw, "bounds", "[low, high]", info.param_names, kind):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(path, f"expected [low, high], got {shown(pair)}")
        a, b = number(path, pair[0]), number(path, pair[1])
        if not a < b:
            raise SpecError(path, f"low bound {a} must be below high bound {b}")
        lo[name], hi[name] = a, b

    truth = {}
    for path, name, value in _per_parameter(raw, "truth", "value", info.param_names, kind):
        v = truth[name] = number(path, value)
        if not lo[name] <= v <= hi[name]:
            raise SpecError(path, f"{v} lies outside the bounds [{lo[name]}, {hi[name]}]")
    for name, t in zip(info.param_names, info.truth):
        if name not in truth and not lo[name] <= t <= hi[name]:
            raise SpecError(f"problem.bounds.{name}", f"the standard truth {t} lies outside [{lo[name]}, {hi[name]}]")
    # The validated spec is explicit: every parameter's truth and bounds are written out.
    target.truth = {n: float(truth.get(n, t)) for n, t in zip(info.param_names, info.truth)}
    target.bounds = {n: [lo[n], hi[n]] for n in info.param_names}

    data = raw.get("data")
    if data is not None:
        if not isinstance(data, str) or not data.strip():
            raise SpecError(
                "problem.data", f"expected the path of a file of measured events or null, got {shown(data)}"
            )
        if len(data) > MAX_PATH_CHARS or "\x00" in data or any(len(p.encode()) > 255 for p in Path(data).parts):
            raise SpecError(
                "problem.data",
                f"not a usable file path ({len(data):,} characters; at most "
                f"{MAX_PATH_CHARS}, 255 bytes per name, no NUL)",
            )
        data_path = Path(data) if base_dir is None or Path(data).is_absolute() else base_dir / data
        target.data = str(data_path)
    target.columns = parse_columns(raw.get("columns"), info)
    target.xsec = parse_xsec(raw.get("xsec"), info)
    for key in ("columns", "xsec"):
        if getattr(target, key) is not None and target.data is None:
            raise SpecError(f"problem.{key}", "describes the file problem.data names (ROOT or Parquet); give that file")
    return target


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file; a :class:`SpecError` names the file's field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            content = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise SpecError("spec", f"cannot read {clip_path(path)}: {e.strerror}") from None
    if len(content) > MAX_YAML_BYTES:
        raise SpecError("spec", f"{clip_path(path)}: more than {MAX_YAML_BYTES:,} bytes; a spec is a short YAML file")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("spec", f"{clip_path(path)}: not UTF-8 text (byte {e.start})") from None
    return parse_spec_text(text, base_dir=path.parent)


def parse_spec_text(text: str, base_dir: Path | None = None, max_limits: LimitsSpec | None = None) -> Spec:
    """Validate a spec given as YAML text; refuses over-large, deeply nested or alias-bomb documents
    (:mod:`qcf_studio.engine.safe_yaml`) before building them."""
    try:
        raw = load_yaml(text)
    except YAMLRefused as e:
        raise SpecError("spec", str(e)) from None
    return parse_spec(raw, base_dir, max_limits)


def default_spec(kind: str = "proxy1d") -> Spec:
    """The standard closure spec of problem ``kind`` (its ``spec_defaults`` over the generic defaults)."""
    raw: dict[str, Any] = {"name": f"closure-{kind}"}
    for section, values in problem_info(kind).spec_defaults.items():
        raw[section] = dict(values) if isinstance(values, dict) else values
    raw.setdefault("problem", {})["kind"] = kind
    return parse_spec(raw)


# Dotted paths of the fields that take true, false or null (e.g. training.disc_edge_features), for forms.
OPTIONAL_BOOL_FIELDS: tuple[str, ...] = tuple(
    f"{section.name}.{name}"
    for section in fields(Spec)
    if section.name not in ("version", "name", "campaign")
    for name, hint in get_type_hints(type(getattr(Spec(), section.name)), include_extras=True).items()
    if hint == OptionalFlag
)
