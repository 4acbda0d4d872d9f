"""What each proxy problem *is*, as plain data: parameter names, standard truth, bounds, domain, defaults.

Torch-free, so that a spec validates without importing torch. The torch classes of :mod:`qcf_studio.engine.problems`
take these facts from here (``class Proxy1D(Problem, info=PROXY1D)``), and a problem a user registers
there (:func:`qcf_studio.engine.problems.register_problem`) is described here too, so the facts live in one place.
The numbers are those of the design's "Proxy problems" section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["ProblemInfo", "PROXY1D", "PROXY2D", "MULTISET2D", "GAUSS6", "describe", "problem_info", "problem_kinds"]


@dataclass(frozen=True)
class ProblemInfo:
    """The data of one problem; each field is the class attribute of the same name of
    :class:`qcf_studio.engine.problems.Problem` (see its docstring for what each means)."""

    kind: str
    param_names: tuple[str, ...]
    truth: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    qcf_names: tuple[str, ...]
    observable_names: tuple[str, ...]
    x_range: tuple[float, float]
    core_range: tuple[float, float]
    y_range: tuple[float, float] | None = None
    description: str = ""
    normalisation_params: tuple[str, ...] = ()
    edge_features: bool = True
    disc_per_observable: bool = False
    grid_points: int = 512
    grid_spacing: str = "uniform"
    spec_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.param_names)
        for name in ("truth", "lo", "hi"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.kind}: {name} has {len(getattr(self, name))} values, expected {n}")
        if any(lo >= hi for lo, hi in zip(self.lo, self.hi)):
            raise ValueError(f"{self.kind}: every lower bound must be below its upper bound")
        object.__setattr__(self, "spec_defaults", MappingProxyType(dict(self.spec_defaults)))

    @property
    def event_dims(self) -> int:
        """Coordinates per event: 1 or 2."""
        return len(self.domain)

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        return domain_of(self.x_range, self.y_range)


def domain_of(x_range: tuple[float, float], y_range: tuple[float, float] | None) -> tuple[tuple[float, float], ...]:
    """The ranges of an event's coordinates: ``(x_range,)``, or ``(x_range, y_range)`` for 2D events. One definition
    for :class:`ProblemInfo` and :class:`~qcf_studio.engine.problems.base.Problem`."""
    return (x_range,) if y_range is None else (x_range, y_range)


_RHO_A = (0.5, 3.0, 0.3, 4.0, 0.75)  # proxy2d's truth and multiset2d's density A
_RHO_B = (0.2, 3.5, 0.8, 3.2, 0.3)
_RHO_C = (0.8, 2.9, 0.1, 4.3, 1.2)
_RHO_LO = (-0.5, 2.75, 0.0, 3.0, 0.0)
_RHO_HI = (1.0, 4.0, 1.3, 4.5, 1.5)
_UNIT = (0.001, 0.999)


def _calibrated_gan(name: str, steps: int) -> dict[str, Any]:
    """A problem's standard closure spec with the GAN settings a 30-replica campaign found calibrated
    (docs/campaigns.md; :mod:`qcf_studio.engine.campaign.findings` holds the numbers): a bootstrap ensemble of 4
    point estimates, ``steps`` steps of 8 parameter sets × 256 events, the estimate averaged over the last quarter."""
    return {
        "name": name,
        "training": {
            "steps": steps,
            "batch_params": 8,
            "events_per_param": 256,
            "noise_final": 0.0,
            "average_last": 0.25,
        },
        "ensemble": {"members": 4, "bootstrap": True},
    }


PROXY1D = ProblemInfo(
    kind="proxy1d",
    description="SAGIPS 1D demo: u, d → σ1 = 4u + d, σ2 = 4d + u on [0.1, 1]",
    param_names=("Nu", "au", "bu", "Nd", "ad", "bd"),
    truth=(2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0),
    lo=(0.0, -1.0, 0.0, 0.0, -1.0, 0.0),
    hi=(3.0, 1.0, 5.0, 3.0, 1.0, 5.0),
    normalisation_params=("Nu", "Nd"),
    qcf_names=("u", "d"),
    observable_names=("sigma1", "sigma2"),
    x_range=(0.1, 1.0),
    core_range=(0.1, 0.9),
    spec_defaults=_calibrated_gan("closure-1d", steps=6000),
)
PROXY2D = ProblemInfo(
    kind="proxy2d",
    description="2D density ρ(x, y) = x^p0 (1−x)^p1 y^p2 (1−y)^p3 (1 + p4 x y) on [0.001, 0.999]²",
    param_names=("p0", "p1", "p2", "p3", "p4"),
    truth=_RHO_A,
    lo=_RHO_LO,
    hi=_RHO_HI,
    qcf_names=("rho",),
    observable_names=("rho",),
    x_range=_UNIT,
    y_range=_UNIT,
    core_range=_UNIT,
    grid_points=64,
    grid_spacing="clustered",
    # The discriminator sees z-scored positions, not the logs of the distances to the edges: with
    # those, the bootstrap members agreed on p0 to half the likelihood error around a biased value
    # (closure-2d: pull −2.27, −3.02 with 5% smearing); without, pulls ≤ 1.41 and QCFs within 0.93 σ.
    edge_features=False,
    spec_defaults=_calibrated_gan("closure-2d", steps=12000),  # proxy1d's 6000 left p4's errors too large
)
MULTISET2D = ProblemInfo(
    kind="multiset2d",
    description="four 2D data sets mixing three ρ(x, y) densities A, B, C; 15 parameters fitted at once",
    param_names=tuple(f"{d}_p{i}" for d in "ABC" for i in range(5)),
    truth=_RHO_A + _RHO_B + _RHO_C,
    lo=_RHO_LO * 3,
    hi=_RHO_HI * 3,
    qcf_names=("A", "B", "C"),
    observable_names=("set1", "set2", "set3", "set4"),
    x_range=_UNIT,
    y_range=_UNIT,
    core_range=_UNIT,
    grid_points=64,
    grid_spacing="clustered",
    # A discriminator network per data set: one shared through a label input left the fit with C's
    # errors up to 2.38× the likelihood's (closure-multiset2d); with a network each, the bootstrap
    # members track likelihood fits of the same replicas (correlation 0.81-0.98, spread 0.72-1.33×).
    disc_per_observable=True,
    spec_defaults={"problem": {"events": 50_000}, "training": {"steps": 1500, "batch_params": 32}},
)
GAUSS6 = ProblemInfo(
    kind="gauss6",
    description="six Gaussian data sets y_k ~ N(c_k · p, 1), two parameters (fast toy)",
    param_names=("p0", "p1"),
    truth=(2.0, 1.0),
    lo=(0.0, 0.0),
    hi=(4.0, 3.0),
    qcf_names=tuple(f"y{k + 1}" for k in range(6)),
    observable_names=tuple(f"y{k + 1}" for k in range(6)),
    x_range=(-25.0, 20.0),
    core_range=(-25.0, 20.0),
    edge_features=False,
    grid_points=1024,
    spec_defaults={"problem": {"events": 10_000}, "training": {"steps": 600, "events_per_param": 16}},
)

_CATALOG: dict[str, ProblemInfo] = {p.kind: p for p in (PROXY1D, PROXY2D, MULTISET2D, GAUSS6)}
_registry_loaded = False


def describe(info: ProblemInfo) -> None:
    """Add ``info`` to the catalog (:func:`qcf_studio.engine.problems.register_problem` does, for every problem)."""
    _CATALOG[info.kind] = info


def _load_registry() -> None:
    """Import the torch registry once, which imports the user's problems (entry points, ``$QCF_STUDIO_PROBLEMS``)
    and describes them here: only for a kind not built in, so built-in problems validate without torch."""
    global _registry_loaded
    if not _registry_loaded:
        _registry_loaded = True
        import qcf_studio.engine.problems  # noqa: F401


def problem_info(kind: str) -> ProblemInfo:
    """The description of the problem registered as ``kind``; ``KeyError`` names the known kinds."""
    if kind not in _CATALOG:
        _load_registry()
    try:
        return _CATALOG[kind]
    except KeyError:
        raise KeyError(f"unknown problem kind {kind!r}; known: {', '.join(problem_kinds())}") from None


def problem_kinds() -> list[str]:
    """Every registered kind, the user's included (loading them imports torch)."""
    _load_registry()
    return sorted(_CATALOG)
