"""The run specification: a versioned YAML document, validated before anything is dispatched.

Unknown keys are errors, every error names the field (``problem.truth.Nu``) and what is wrong,
and a validated :class:`Spec` is frozen into every result file as YAML.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from engine.campaign.section import CampaignSpec, parse_campaign
from engine.detector import DetectorConfigError, build_detector
from engine.gan.trainer import TrainingConfig
from engine.problems import get_problem, problem_kinds
from engine.run.devices import DEVICES
from engine.run.parallel import SCHEDULES
from engine.safe_yaml import MAX_YAML_BYTES, YAMLRefused, load_yaml
from engine.samplers import GRID_SPACINGS
from engine.specfields import OPTIONAL_BOOL_TYPES, SpecError, at_most, fill_section, number
from engine.textlimits import clip, shown

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
METHODS = ("gan", "mle")
CLUSTER_MODES = ("ensemble", "data_parallel")
MIN_BOOTSTRAP_MEMBERS = 4  # fewer give an error estimate with too few degrees of freedom to judge pulls by
MAX_PATH_CHARS = 4096  # problem.data (Linux's PATH_MAX)
# Fields that take one of a fixed set of values (problem.kind: the registered problems), for forms.
GRID_SPACING_CHOICES = ("auto", *GRID_SPACINGS)
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "training.method": METHODS,
    "cluster.mode": CLUSTER_MODES,
    "cluster.schedule": SCHEDULES,
    "cluster.device": DEVICES,
    "training.grid_spacing": GRID_SPACING_CHOICES,
}


@dataclass
class ProblemSpec:
    kind: str = "proxy1d"
    truth: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, list[float]] = field(default_factory=dict)
    events: int = 100_000
    seed: int = 1
    data: str | None = None


@dataclass
class DetectorSpec:
    """The ``detector`` section; see :func:`engine.detector.build_detector` for every key."""

    resolution: float = 0.0
    acceptance: dict[str, Any] | None = None
    background: dict[str, Any] | None = None
    surrogate: dict[str, Any] | None = None

    def section(self) -> dict[str, Any]:
        """The section as a mapping for :func:`~engine.detector.build_detector` (switched-off effects left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainingSpec(TrainingConfig):
    method: str = "gan"
    mle_reference: bool = False  # gan runs: also fit the data by maximum likelihood (GAN/MLE error ratio)

    def config(self) -> TrainingConfig:
        return TrainingConfig(**{n: getattr(self, n) for n in TrainingConfig.field_names()})


@dataclass
class EnsembleSpec:
    members: int = 2
    # Train each member on its own bootstrap replica of the measured data (Poisson(1) event weights,
    # cross sections redrawn within their errors); the ensemble's errors are then the spread of the
    # members' estimates, the statistical error of the GAN estimator (see engine.results).
    bootstrap: bool = False


@dataclass
class ClusterSpec:
    """Where and how members train; see ``engine.run.distributed`` and ``engine.run.parallel``."""

    workers: int = 2  # processes of the embedded LocalCluster (ignored with a remote scheduler)
    device: str = "auto"  # auto: CUDA on workers that have it, else CPU | cpu | cuda: on workers with GPU=1 only
    mode: str = "ensemble"  # ensemble: a member per task; data_parallel: ``ranks`` tasks share one generator
    ranks: int = 1  # data_parallel: ranks per member, each with its own data shard and discriminator
    schedule: str = "sync"  # data_parallel: sync (all-reduce every step) | grouped (groups sync every sync_every)
    group_size: int = 1  # grouped: ranks per group (gradients shared every step inside a group)
    sync_every: int = 10  # grouped: steps between the group leaders' weight averages
    timeout: float = 60.0  # seconds a rank waits for its peers before it gives up (a lost rank stops the rest)
    checkpoint_every: int = 100  # steps between checkpoints a member resumes from if its worker dies (0: none)


@dataclass
class LimitsSpec:
    """Upper bounds that validation checks, so that a typo or a hostile spec cannot ask for more than a
    machine has (``events: 1e12``). A spec may raise them (``limits: {members: 500}``) where a cluster really
    needs more; specs typed in the dashboard may not (see ``app.dashboard.runs``)."""

    events: int = 5_000_000  # problem.events, per observable
    steps: int = 1_000_000  # training.steps
    members: int = 64  # ensemble.members
    ranks: int = 64  # cluster.ranks
    workers: int = 64  # cluster.workers (processes of the embedded cluster)
    grid_cells: int = 1_048_576  # training.grid_points ** (event coordinates): the sampler's tabulation grid
    events_per_step: int = 1_000_000  # training.batch_params * training.events_per_param
    network_width: int = 4096  # training.gen_width, disc_width, noise_dim
    network_depth: int = 64  # training.gen_depth, disc_depth
    metric_points: int = 100_000  # training.steps / metrics_every: rows of metrics per member
    snapshots: int = 10_000  # training.steps / snapshot_every: QCF snapshots streamed per member
    replicas: int = 10_000  # campaign.replicas: pseudo-data sets of a campaign (each fitted by every method)


@dataclass
class Spec:
    version: int = SPEC_VERSION
    name: str = "closure"
    problem: ProblemSpec = field(default_factory=ProblemSpec)
    detector: DetectorSpec = field(default_factory=DetectorSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    ensemble: EnsembleSpec = field(default_factory=EnsembleSpec)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    campaign: CampaignSpec | None = None  # many pseudo-data replicas, each fitted (engine.campaign)

    def truth_values(self) -> list[float]:
        """The truth as a list in the problem's parameter order."""
        return list(self.problem.truth.values())

    def bounds_values(self) -> tuple[list[float], list[float]]:
        """Lower and upper bounds of the generator's output, in the problem's parameter order."""
        pairs = list(self.problem.bounds.values())
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["training"] = {"method": d["training"].pop("method"), **d["training"]}
        if self.limits == LimitsSpec():  # the usual case: the limits go without saying
            del d["limits"]
        if self.campaign is None:
            del d["campaign"]
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- validation --------------------------------------------------------------------------------


_POSITIVE_TRAINING = (
    "steps", "batch_params", "events_per_param", "noise_dim", "gen_width", "disc_width",
    "metrics_every", "snapshot_every",
)  # fmt: skip


def parse_spec(raw: Any, base_dir: Path | None = None, max_limits: LimitsSpec | None = None) -> Spec:
    """Validate a spec given as a mapping (parsed YAML) and return it; raise :class:`SpecError`.

    ``max_limits``: the most a spec's ``limits`` section may raise the limits to (the dashboard passes
    the defaults, so specs typed in a browser cannot raise them); ``None``: no bound (the command line).
    Whether ``problem.data`` is a readable file of measured data is checked where it is read
    (:func:`engine.run.runner.measured_data`, once, where the run starts), not here: workers are sent this
    :class:`Spec` and the data read there, and never open the file themselves.
    """
    if not isinstance(raw, dict):
        raise SpecError("spec", "expected a mapping of sections (problem, training, ...)")
    spec = Spec()
    spec.problem.kind = ""  # set (and the standard truth filled in) by _parse_problem
    allowed = {f.name for f in fields(Spec)}
    for key in raw:
        if key not in allowed:
            raise SpecError(str(key), f"unknown section; allowed: {', '.join(sorted(allowed))}")
    version = raw.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise SpecError("version", f"unsupported spec version {shown(version)}; this tool reads version {SPEC_VERSION}")
    name = raw.get("name", spec.name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise SpecError("name", f"use 1-64 letters, digits, '.', '_' or '-', got {shown(name)}")
    spec.name = name
    _parse_limits(spec.limits, raw.get("limits"), max_limits)

    _parse_problem(spec.problem, raw.get("problem") or {}, base_dir)
    fill_section("detector", spec.detector, raw.get("detector"))
    try:
        build_detector(
            spec.detector.section(), get_problem(spec.problem.kind).domain, coord_axis=True, validate_only=True
        )
    except DetectorConfigError as e:
        raise SpecError(e.field, e.message) from None
    fill_section("training", spec.training, raw.get("training"))
    t = spec.training
    if t.method not in METHODS:
        raise SpecError("training.method", f"{shown(t.method)} is not available; choose one of {', '.join(METHODS)}")
    for key in _POSITIVE_TRAINING:
        if getattr(t, key) < 1:
            raise SpecError(f"training.{key}", f"must be at least 1, got {getattr(t, key)}")
    for key in ("lr_g", "lr_d"):
        if not 0 < getattr(t, key) < 1:
            raise SpecError(f"training.{key}", f"must lie in (0, 1), got {getattr(t, key)}")
    if not 0 < t.lr_final <= 1:
        raise SpecError("training.lr_final", f"must lie in (0, 1], got {t.lr_final}")
    if 0 < t.grid_points < 16:
        raise SpecError("training.grid_points", f"must be 0 (problem default) or at least 16, got {t.grid_points}")
    if t.grid_spacing not in GRID_SPACING_CHOICES:
        choices = ", ".join(GRID_SPACING_CHOICES)
        raise SpecError("training.grid_spacing", f"{shown(t.grid_spacing)} is not available; choose one of {choices}")
    for key in ("xsec_start", "xsec_ramp", "noise_final", "average_last"):
        if not 0 <= getattr(t, key) <= 1:
            raise SpecError(f"training.{key}", f"must lie in [0, 1], got {getattr(t, key)}")
    fill_section("ensemble", spec.ensemble, raw.get("ensemble"))
    if spec.ensemble.members < 1:
        raise SpecError("ensemble.members", f"must be at least 1, got {spec.ensemble.members}")
    if t.method == "mle" or t.mle_reference:
        unsupported = [k for k in ("acceptance", "background", "surrogate") if getattr(spec.detector, k) is not None]
        if unsupported:
            field = "training.method" if t.method == "mle" else "training.mle_reference"
            raise SpecError(field, f"the likelihood fit models resolution smearing only, not detector.{unsupported[0]}")
    if t.method == "mle" and spec.ensemble.bootstrap:
        raise SpecError("ensemble.bootstrap", "an mle fit has Hessian errors; bootstrap replicas are for gan ensembles")
    if spec.ensemble.bootstrap and spec.ensemble.members < MIN_BOOTSTRAP_MEMBERS:
        raise SpecError(
            "ensemble.members",
            f"bootstrap errors are the spread of the members' estimates: use at least "
            f"{MIN_BOOTSTRAP_MEMBERS}, got {spec.ensemble.members}",
        )
    if t.method == "mle" and spec.ensemble.members != 1:
        raise SpecError("ensemble.members", f"an mle fit is deterministic: use 1, got {spec.ensemble.members}")
    fill_section("cluster", spec.cluster, raw.get("cluster"))
    c = spec.cluster
    if c.workers < 1:
        raise SpecError("cluster.workers", f"must be at least 1, got {c.workers}")
    _check_cluster(c, t.method)
    _check_limits(spec)
    if raw.get("campaign") is not None:
        spec.campaign = _parse_campaign(spec, raw["campaign"])
    return spec


def _parse_campaign(spec: Spec, raw: Any) -> CampaignSpec:
    campaign = parse_campaign(raw, spec.problem.bounds, METHODS, spec.training.method, spec.limits.replicas)
    if spec.problem.data is not None:
        raise SpecError(
            "campaign", "a campaign fits pseudo-data fluctuated from a known truth; problem.data must be null"
        )
    if "mle" in campaign.methods:
        unsupported = [k for k in ("acceptance", "background", "surrogate") if getattr(spec.detector, k) is not None]
        if unsupported:
            raise SpecError(
                "campaign.methods", f"the likelihood fit models resolution smearing only, not detector.{unsupported[0]}"
            )
    return campaign


def _parse_limits(target: LimitsSpec, raw: Any, max_limits: LimitsSpec | None) -> None:
    fill_section("limits", target, raw)
    for f in fields(LimitsSpec):
        value = getattr(target, f.name)
        if value < 1:
            raise SpecError(f"limits.{f.name}", f"must be at least 1, got {value}")
        if max_limits is not None and value > getattr(max_limits, f.name):
            raise SpecError(
                f"limits.{f.name}",
                f"may be at most {getattr(max_limits, f.name):,} here; larger runs "
                f"go through the command line (qcf-studio run)",
            )


def _check_limits(spec: Spec) -> None:
    """Everything that sizes memory or time against :class:`LimitsSpec`, before anything is dispatched."""
    lim, t, c = spec.limits, spec.training, spec.cluster
    at_most("problem.events", spec.problem.events, lim.events)
    at_most("training.steps", t.steps, lim.steps)
    at_most("ensemble.members", spec.ensemble.members, lim.members)
    at_most("cluster.ranks", c.ranks, lim.ranks)
    at_most("cluster.workers", c.workers, lim.workers)
    dims = get_problem(spec.problem.kind).event_dims
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
    if c.device not in DEVICES:
        raise SpecError("cluster.device", f"{shown(c.device)} is not available; choose one of {', '.join(DEVICES)}")
    if c.device == "cuda" and method == "mle":
        raise SpecError("cluster.device", "the maximum-likelihood fit runs on the CPU; use auto or cpu, got cuda")
    if c.mode not in CLUSTER_MODES:
        raise SpecError("cluster.mode", f"{shown(c.mode)} is not available; choose one of {', '.join(CLUSTER_MODES)}")
    if c.mode == "ensemble" and c.ranks != 1:
        raise SpecError(
            "cluster.ranks", f"ranks share one generator in mode data_parallel; ensemble mode has 1, got {c.ranks}"
        )
    if c.ranks < 1:
        raise SpecError("cluster.ranks", f"must be at least 1, got {c.ranks}")
    if c.mode == "data_parallel":
        if method != "gan":
            raise SpecError(
                "cluster.mode", f"data_parallel shares generator gradients: it needs training.method gan, got {method}"
            )
    if c.schedule not in SCHEDULES:
        raise SpecError(
            "cluster.schedule", f"unknown schedule {shown(c.schedule)}; choose one of {', '.join(SCHEDULES)}"
        )
    for key in ("group_size", "sync_every"):
        if getattr(c, key) < 1:
            raise SpecError(f"cluster.{key}", f"must be at least 1, got {getattr(c, key)}")
    if c.schedule == "grouped" and c.ranks % c.group_size:
        raise SpecError(
            "cluster.group_size", f"must divide cluster.ranks ({c.ranks}) into equal groups, got {c.group_size}"
        )
    if not c.timeout >= 1:
        raise SpecError("cluster.timeout", f"must be at least 1 second, got {c.timeout}")


def _per_parameter(raw: dict, key: str, what: str, names: tuple[str, ...], kind: str) -> list[tuple[str, str, Any]]:
    """``(path, name, value)`` of the mapping ``problem.<key>``; raises for a non-mapping or an unknown name."""
    mapping = raw.get(key) or {}
    if not isinstance(mapping, dict):
        raise SpecError(f"problem.{key}", f"expected a mapping of parameter: {what}, got {shown(mapping)}")
    for name in mapping:
        if name not in names:
            raise SpecError(f"problem.{key}.{name}", f"unknown parameter; {kind} has {', '.join(names)}")
    return [(f"problem.{key}.{name}", name, value) for name, value in mapping.items()]


def _parse_problem(target: ProblemSpec, raw: Any, base_dir: Path | None) -> None:
    if not isinstance(raw, dict):
        raise SpecError("problem", f"expected a mapping, got {shown(raw)}")
    kind = raw.get("kind", ProblemSpec.kind)
    if not isinstance(kind, str) or kind not in problem_kinds():
        raise SpecError("problem.kind", f"unknown problem {shown(kind)}; choose one of {', '.join(problem_kinds())}")
    problem = get_problem(kind)
    events = raw.get("events", target.events)
    if not isinstance(events, bool) and isinstance(events, int) and events < 100:
        raise SpecError("problem.events", f"must be at least 100 events per observable, got {events}")
    rest = {k: v for k, v in raw.items() if k not in ("truth", "bounds", "data")}
    fill_section("problem", target, rest)
    target.kind = kind

    lo, hi = dict(zip(problem.param_names, problem.lo)), dict(zip(problem.param_names, problem.hi))
    for path, name, pair in _per_parameter(raw, "bounds", "[low, high]", problem.param_names, kind):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError(path, f"expected [low, high], got {shown(pair)}")
        a, b = number(path, pair[0]), number(path, pair[1])
        if not a < b:
            raise SpecError(path, f"low bound {a} must be below high bound {b}")
        lo[name], hi[name] = a, b

    truth = {}
    for path, name, value in _per_parameter(raw, "truth", "value", problem.param_names, kind):
        v = truth[name] = number(path, value)
        if not lo[name] <= v <= hi[name]:
            raise SpecError(path, f"{v} lies outside the bounds [{lo[name]}, {hi[name]}]")
    for name, t in zip(problem.param_names, problem.truth):
        if name not in truth and not lo[name] <= t <= hi[name]:
            raise SpecError(f"problem.bounds.{name}", f"the standard truth {t} lies outside [{lo[name]}, {hi[name]}]")
    # The validated spec is explicit: every parameter's truth and bounds are written out.
    target.truth = {n: float(truth.get(n, t)) for n, t in zip(problem.param_names, problem.truth)}
    target.bounds = {n: [lo[n], hi[n]] for n in problem.param_names}

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


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file; a :class:`SpecError` names the file's field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            content = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise SpecError("spec", f"cannot read {clip(str(path))}: {e.strerror}") from None
    if len(content) > MAX_YAML_BYTES:
        raise SpecError("spec", f"{clip(str(path))}: more than {MAX_YAML_BYTES:,} bytes; a spec is a short YAML file")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("spec", f"{clip(str(path))}: not UTF-8 text (byte {e.start})") from None
    return parse_spec_text(text, base_dir=path.parent)


def parse_spec_text(text: str, base_dir: Path | None = None, max_limits: LimitsSpec | None = None) -> Spec:
    """Validate a spec given as YAML text; refuses over-large, deeply nested or alias-bomb documents
    (:mod:`engine.safe_yaml`) before building them."""
    try:
        raw = load_yaml(text)
    except YAMLRefused as e:
        raise SpecError("spec", str(e)) from None
    return parse_spec(raw, base_dir, max_limits)


def default_spec(kind: str = "proxy1d") -> Spec:
    """The standard closure spec of problem ``kind`` (its ``spec_defaults`` over the generic defaults)."""
    raw: dict[str, Any] = {"name": f"closure-{kind}"}
    for section, values in get_problem(kind).spec_defaults.items():
        raw[section] = dict(values) if isinstance(values, dict) else values
    raw.setdefault("problem", {})["kind"] = kind
    return parse_spec(raw)


# Dotted paths of the fields that take true, false or null (e.g. training.disc_edge_features), for forms.
OPTIONAL_BOOL_FIELDS: tuple[str, ...] = tuple(
    f"{section.name}.{f.name}"
    for section in fields(Spec)
    if section.name not in ("version", "name", "campaign")
    for f in fields(getattr(Spec(), section.name))
    if f.type in OPTIONAL_BOOL_TYPES
)
