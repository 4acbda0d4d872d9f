"""The spec's ``detector`` section: its keys and values, checked without torch, and the settings they resolve
to on a problem's domain (:func:`detector_settings`), from which :func:`qcf_studio.engine.detector.build_detector`
builds
the torch modules.

All keys are optional; an absent or null key switches its effect off. Effects run in the order smearing
(analytic or learned) → acceptance → background.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import WithJsonSchema, with_config

from qcf_studio.engine.choices import BackgroundShape
from qcf_studio.engine.specfields import SECTION_CONFIG, Number, Range, SpecError, Whole, fill_section, number
from qcf_studio.engine.textlimits import shown

__all__ = [
    "DetectorConfigError",
    "DetectorSpec",
    "AcceptanceSpec",
    "BackgroundSpec",
    "SurrogateSpec",
    "DetectorSettings",
    "detector_settings",
    "SURROGATE_MAX_EVENTS",
    "SURROGATE_MAX_EPOCHS",
]

SURROGATE_MAX_EVENTS = 10_000_000  # training pairs of a learned smearing
SURROGATE_MAX_EPOCHS = 1000

# One number for every coordinate, or a list of one per coordinate (its length is checked against the domain).
PerCoordinate = Annotated[
    Any,
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}, "minItems": 1}, {"type": "null"}]}
    ),
]


class DetectorConfigError(SpecError):
    """An invalid ``detector`` section: ``field`` is the dotted path of the offending key."""


@with_config(SECTION_CONFIG)
@dataclass
class AcceptanceSpec:
    """Smooth turn-on ``ε(x) = max · Π_d sigmoid((x_d − turn_on_d) / width_d)``."""

    turn_on: PerCoordinate = None
    """The 50 % point: a number or a list per coordinate (null: the domain's lower edge)."""
    width: PerCoordinate = None
    """Width of the turn-on, > 0: a number or a list per coordinate (null: 5 % of the domain's width)."""
    max: Annotated[Number, Range(0, 1, lo_open=True)] = 1.0
    """Plateau efficiency."""


@with_config(SECTION_CONFIG)
@dataclass
class BackgroundSpec:
    """A known background admixed on the domain with fraction ``f``."""

    fraction: Annotated[Number, Range(0, 1, hi_open=True)] = 0.1
    """Fraction of background events."""
    shape: BackgroundShape = "uniform"
    """Per coordinate: uniform | exponential."""
    slope: PerCoordinate = None
    """Density ``∝ exp(slope · x)`` (null: -1); only with shape: exponential."""


@with_config(SECTION_CONFIG)
@dataclass
class SurrogateSpec:
    """Learn the resolution smearing with a mixture density network (trained on truth positions uniform on the
    domain) and use it instead; needs ``resolution > 0``."""

    events: Annotated[Whole, Range(1000, SURROGATE_MAX_EVENTS)] = 100_000
    """Training pairs."""
    epochs: Annotated[Whole, Range(1, SURROGATE_MAX_EPOCHS)] = 20
    """Passes over the pairs (batches of 8192)."""
    components: Annotated[Whole, Range(1, 16)] = 3
    """Gaussian components."""
    hidden: Annotated[Whole, Range(4, 512)] = 64
    """Width of the two hidden layers."""
    seed: Annotated[Whole, Range(0)] = 0
    """Seed of the pairs and of the initial weights."""


@with_config(SECTION_CONFIG)
@dataclass
class DetectorSpec:
    """Detector effects between the generated events and the discriminator (null or absent: off)."""

    resolution: Annotated[Number, Range(0, 0.5)] = 0.0
    """Relative resolution ``σ_R`` of ``x → x (1 − R)``, ``R ~ N(0, σ_R²)``."""
    acceptance: AcceptanceSpec | None = None
    """Smooth turn-on of the efficiency (null: none)."""
    background: BackgroundSpec | None = None
    """A known background admixed to the events (null: none)."""
    surrogate: SurrogateSpec | None = None
    """A learned smearing used instead of the analytic one (null: none)."""

    def section(self) -> dict[str, Any]:
        """The section as a mapping (switched-off effects and null keys left out), as a spec writes it."""
        out: dict[str, Any] = {"resolution": self.resolution}
        for key in ("acceptance", "background", "surrogate"):
            value = getattr(self, key)
            if value is not None:
                out[key] = {k: v for k, v in asdict(value).items() if v is not None}
        return out


@dataclass(frozen=True)
class DetectorSettings:
    """A validated section resolved on a domain: every list has one value per coordinate."""

    resolution: float
    surrogate: SurrogateSpec | None
    turn_on: list[float] | None  # acceptance (None: no acceptance)
    width: list[float] | None
    max_efficiency: float
    background_fraction: float | None  # background (None: none)
    background_shape: str
    slope: list[float]


def _nums(path: str, value: Any, dims: int) -> list[float]:
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise DetectorConfigError(path, f"expected one number or a list of {dims}, got {len(value)}")
        return [_number(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return [_number(path, value)] * dims


def _number(path: str, value: Any) -> float:
    try:
        return number(path, value)
    except SpecError as e:
        raise DetectorConfigError(e.field, e.message) from None


def parse_detector(raw: Any, path: str = "detector") -> DetectorSpec:
    """The ``detector`` section's keys and types checked (``None``: no effects)."""
    if isinstance(raw, Mapping) and raw.get("surrogate") is not None and raw.get("resolution", 0.0) in (0, None):
        raise DetectorConfigError(f"{path}.surrogate", "needs detector.resolution > 0 to learn the smearing from")
    try:
        return fill_section(path, DetectorSpec, dict(raw) if isinstance(raw, Mapping) else raw)
    except DetectorConfigError:
        raise
    except SpecError as e:
        raise DetectorConfigError(e.field, e.message) from None


def detector_settings(
    raw: Mapping[str, Any] | DetectorSpec | None, domain: Sequence[tuple[float, float]], path: str = "detector"
) -> DetectorSettings:
    """The settings of the section ``raw`` on ``domain`` (``[(lo, hi), ...]`` per coordinate); raises
    :class:`DetectorConfigError` naming ``<path>.<key>``."""
    spec = raw if isinstance(raw, DetectorSpec) else parse_detector(raw, path)
    lo, hi = [float(a) for a, _ in domain], [float(b) for _, b in domain]
    dims = len(domain)
    turn_on = width = None
    if (a := spec.acceptance) is not None:
        p = f"{path}.acceptance"
        turn_on = _nums(f"{p}.turn_on", a.turn_on, dims) if a.turn_on is not None else lo
        width = _nums(f"{p}.width", a.width, dims) if a.width is not None else [0.05 * (b - c) for c, b in zip(lo, hi)]
        for i, w in enumerate(width):
            if not w > 0:
                raise DetectorConfigError(
                    f"{p}.width" + (f"[{i}]" if isinstance(a.width, list) else ""), f"must be > 0, got {w:g}"
                )
    fraction, shape, slope = None, "uniform", [-1.0] * dims
    if (b := spec.background) is not None:
        p = f"{path}.background"
        if b.slope is not None and b.shape != "exponential":
            raise DetectorConfigError(f"{p}.slope", f"only used with shape: exponential, got shape {shown(b.shape)}")
        if b.slope is not None:
            slope = _nums(f"{p}.slope", b.slope, dims)
        fraction, shape = b.fraction, b.shape
    return DetectorSettings(
        resolution=spec.resolution,
        surrogate=spec.surrogate,
        turn_on=turn_on,
        width=width,
        max_efficiency=spec.acceptance.max if spec.acceptance is not None else 1.0,
        background_fraction=fraction,
        background_shape=shape,
        slope=slope,
    )
