"""The spec's ``detector`` section: validation (errors name the offending field) and :func:`build_detector`,
which builds the :class:`~engine.detector.chain.DetectorChain` it describes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from engine.detector._common import Domain, _coord_axis, _domain_tensors
from engine.detector.acceptance import Acceptance
from engine.detector.background import Background
from engine.detector.chain import DetectorChain
from engine.detector.smearing import ResolutionSmearing
from engine.detector.surrogate import SurrogateSmearing
from engine.textlimits import shown

__all__ = ["DetectorConfigError", "build_detector"]


class DetectorConfigError(ValueError):
    """An invalid ``detector`` section: ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


SURROGATE_MAX_EVENTS = 10_000_000  # training pairs of a learned smearing
SURROGATE_MAX_EPOCHS = 1000

_KEYS = {
    "": ("resolution", "acceptance", "background", "surrogate"),
    "acceptance": ("turn_on", "width", "max"),
    "background": ("fraction", "shape", "slope"),
    "surrogate": ("events", "epochs", "components", "hidden", "seed"),
}


def _section(path: str, raw: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise DetectorConfigError(path, f"expected a mapping, got {shown(raw)}")
    for key in raw:
        if key not in allowed:
            raise DetectorConfigError(f"{path}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    return {k: v for k, v in raw.items() if v is not None}


def _num(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DetectorConfigError(path, f"expected a finite number, got {shown(value)}")
    return float(value)


def _nums(path: str, value: Any, dims: int) -> list[float]:
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise DetectorConfigError(path, f"expected one number or a list of {dims}, got {len(value)}")
        return [_num(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return [_num(path, value)] * dims


def _int(path: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DetectorConfigError(path, f"expected a whole number, got {shown(value)}")
    if value < minimum:
        raise DetectorConfigError(path, f"must be at least {minimum}, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise DetectorConfigError(path, f"must be at most {maximum:,}, got {shown(value)}")
    return value


def build_detector(
    cfg: Mapping[str, Any] | None,
    domain: Domain,
    *,
    coord_axis: bool | None = None,
    path: str = "detector",
    validate_only: bool = False,
) -> DetectorChain:
    """Build the detector chain from the ``detector`` section of a spec (validated here).

    All keys are optional; an absent or null key switches its effect off. Effects run in the order
    smearing (analytic or learned) → acceptance → background.

    Keys:
        resolution (float, 0.0): relative resolution ``σ_R`` of ``x → x (1 − R)``, ``R ~ N(0, σ_R²)``; in [0, 0.5].
        acceptance (mapping): smooth turn-on ``ε(x) = max · Π_d sigmoid((x_d − turn_on_d) / width_d)``:
            turn_on (number or list per coordinate, default: the domain's lower edge): the 50 % point;
            width (number or list, default: 5 % of the domain's width): > 0;
            max (float, 1.0): plateau efficiency in (0, 1].
        background (mapping): a known background admixed with fraction ``f`` on the domain:
            fraction (float, 0.1): in [0, 1);
            shape (``uniform`` | ``exponential``, ``uniform``): per coordinate;
            slope (number or list, -1.0): density ``∝ exp(slope · x)``; only with ``shape: exponential``.
        surrogate (mapping): learn the resolution smearing with a mixture density network and use it instead
            (needs ``resolution > 0``); trained on truth positions uniform on the domain:
            events (int, 100000): training pairs, 1000 to 10 000 000;
            epochs (int, 20): passes over the pairs (batches of 8192), 1 to 1000;
            components (int, 3): Gaussian components, 1 to 16;
            hidden (int, 64): width of the two hidden layers, 4 to 512;
            seed (int, 0): seed of the pairs and of the initial weights.

    Arguments:
        cfg: the section (``None`` or ``{}``: no detector effects).
        domain: the problem's domain, ``[(lo, hi), ...]`` per coordinate.
        coord_axis: whether events carry a coordinate axis (default: more than one coordinate; the engine's
            ``(..., N, 1)`` events of 1D problems need ``True``).
        path: the section's name in error messages.
        validate_only: check the section but do not train a surrogate (the chain then smears analytically).

    Raises:
        DetectorConfigError (a ValueError): ``"<path>.<key>: <what is wrong>"``.
    """
    raw = _section(path, {} if cfg is None else cfg, _KEYS[""])
    try:
        lo, hi = _domain_tensors(domain)
        dims = lo.shape[0]
        coord_axis = _coord_axis(dims, coord_axis)
    except ValueError as e:
        raise DetectorConfigError(path, str(e)) from None
    effects: list[nn.Module] = []

    resolution = _num(f"{path}.resolution", raw.get("resolution", 0.0))
    if not 0 <= resolution <= 0.5:
        raise DetectorConfigError(f"{path}.resolution", f"must be in [0, 0.5], got {resolution:g}")
    smearing = ResolutionSmearing(resolution)

    if "surrogate" in raw:
        p = f"{path}.surrogate"
        s = _section(p, raw["surrogate"], _KEYS["surrogate"])
        if resolution == 0:
            raise DetectorConfigError(p, "needs detector.resolution > 0 to learn the smearing from")
        n_events = _int(f"{p}.events", s.get("events", 100_000), 1000, maximum=SURROGATE_MAX_EVENTS)
        epochs = _int(f"{p}.epochs", s.get("epochs", 20), 1, maximum=SURROGATE_MAX_EPOCHS)
        components = _int(f"{p}.components", s.get("components", 3), 1)
        if components > 16:
            raise DetectorConfigError(f"{p}.components", f"must be at most 16, got {components}")
        hidden = _int(f"{p}.hidden", s.get("hidden", 64), 4)
        if hidden > 512:
            raise DetectorConfigError(f"{p}.hidden", f"must be at most 512, got {hidden}")
        seed = _int(f"{p}.seed", s.get("seed", 0), 0)
        effects.append(
            smearing
            if validate_only
            else SurrogateSmearing.train_from(
                smearing,
                list(zip(lo.tolist(), hi.tolist())),
                events=n_events,
                epochs=epochs,
                components=components,
                hidden=hidden,
                coord_axis=coord_axis,
                generator=torch.Generator().manual_seed(seed),
            )
        )
    elif resolution > 0:
        effects.append(smearing)

    if "acceptance" in raw:
        p = f"{path}.acceptance"
        a = _section(p, raw["acceptance"], _KEYS["acceptance"])
        turn_on = _nums(f"{p}.turn_on", a["turn_on"], dims) if "turn_on" in a else lo.tolist()
        width = _nums(f"{p}.width", a["width"], dims) if "width" in a else (0.05 * (hi - lo)).tolist()
        for i, w in enumerate(width):
            if w <= 0:
                where = f"{p}.width" + (f"[{i}]" if isinstance(a.get("width"), (list, tuple)) else "")
                raise DetectorConfigError(where, f"must be > 0, got {w:g}")
        eff_max = _num(f"{p}.max", a.get("max", 1.0))
        if not 0 < eff_max <= 1:
            raise DetectorConfigError(f"{p}.max", f"must be in (0, 1], got {eff_max:g}")
        effects.append(Acceptance(turn_on, width, eff_max, dims=dims, coord_axis=coord_axis))

    if "background" in raw:
        p = f"{path}.background"
        b = _section(p, raw["background"], _KEYS["background"])
        fraction = _num(f"{p}.fraction", b.get("fraction", 0.1))
        if not 0 <= fraction < 1:
            raise DetectorConfigError(f"{p}.fraction", f"must be in [0, 1), got {fraction:g}")
        shape = b.get("shape", "uniform")
        if shape not in Background.SHAPES:
            raise DetectorConfigError(
                f"{p}.shape", f"must be one of {', '.join(Background.SHAPES)}, got {shown(shape)}"
            )
        if "slope" in b and shape != "exponential":
            raise DetectorConfigError(f"{p}.slope", "only used with shape: exponential")
        slope = _nums(f"{p}.slope", b.get("slope", -1.0), dims)
        if fraction > 0:
            effects.append(Background(list(zip(lo.tolist(), hi.tolist())), fraction, shape, slope, coord_axis))

    return DetectorChain(effects)
