"""The primitives of spec validation: :class:`SpecError` (the dotted path of the field and what is wrong)
and the checks of one value (numbers, whole numbers, limits) or of one section against its dataclass."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from engine.textlimits import clip, shown

__all__ = ["SpecError", "OPTIONAL_BOOL_TYPES", "fill_section", "number", "whole_number", "at_most"]

OPTIONAL_BOOL_TYPES = ("bool | None", "Optional[bool]")  # true, false or null (null: the problem's default)


class SpecError(ValueError):
    """An invalid spec: ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str) -> None:
        field, message = clip(str(field)), clip(message, 600)  # keys and values may come from anyone
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def number(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"expected a number, got {shown(value)}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise SpecError(path, f"expected a finite number, got {shown(value)}")
    return float(value)


def whole_number(path: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"expected a whole number, got {shown(value)}")
    if value < minimum:
        raise SpecError(path, f"must be at least {minimum}, got {shown(value)}")
    return value


def at_most(path: str, value: int, limit: int, what: str = "") -> None:
    if value > limit:
        key = what or path.rpartition(".")[2]
        raise SpecError(
            path,
            f"{shown(value)} is more than the limit of {limit:,}; a spec may raise it with "
            f"limits.{key} where the cluster really needs more",
        )


def fill_section(section: str, target: Any, raw: Any) -> None:
    """Copy ``raw`` onto dataclass ``target`` with type checks; unknown keys raise."""
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise SpecError(section, f"expected a mapping, got {shown(raw)}")
    known = {f.name: f for f in fields(target)}
    for key, value in raw.items():
        path = f"{section}.{clip(str(key))}"
        if key not in known:
            raise SpecError(path, f"unknown key; allowed: {', '.join(known)}")
        default = getattr(target, key)
        if known[key].type in OPTIONAL_BOOL_TYPES:  # e.g. training.disc_edge_features
            if value is not None and not isinstance(value, bool):
                raise SpecError(path, f"expected true, false or null (the problem's default), got {shown(value)}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise SpecError(path, f"expected true or false, got {shown(value)}")
        elif isinstance(default, int):
            value = whole_number(path, value, minimum=0)
        elif isinstance(default, float):
            value = number(path, value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise SpecError(path, f"expected text, got {shown(value)}")
        setattr(target, key, value)
