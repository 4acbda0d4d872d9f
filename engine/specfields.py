"""The primitives of spec validation: :class:`SpecError` (the dotted path of the field and what is wrong),
the field types of the spec's sections and :func:`fill_section`, which checks one section against its dataclass.

The sections are plain dataclasses whose annotations say what each field takes (``Whole``, ``Number``,
``Flag``, a ``Literal`` of choices, a :class:`Range`); pydantic checks them (strictly: ``"3"``, ``3.0`` and
``true`` are not whole numbers) and writes the JSON Schema (:mod:`qcf_studio.engine.spec_schema`), and its first error
becomes one :class:`SpecError` worded as the rest of the spec's messages. Torch-free.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from functools import cache
from typing import Annotated, Any

from pydantic import AllowInfNan, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, Strict, TypeAdapter
from pydantic import ValidationError as _ValidationError
from pydantic_core import PydanticCustomError, core_schema

from qcf_studio.engine.textlimits import clip, shown

__all__ = [
    "SpecError",
    "SECTION_CONFIG",
    "Whole",
    "Number",
    "Flag",
    "OptionalFlag",
    "Text",
    "Range",
    "fill_section",
    "number",
    "whole_number",
    "at_most",
]

# Every section: unknown keys are errors; the comment-free docstring under a field describes it in the schema.
SECTION_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True)

Whole = Annotated[int, Strict()]  # true, 3.0 and "3" are not whole numbers
Number = Annotated[float, Strict(), AllowInfNan(False)]  # a whole number is a number; inf and nan are not
Flag = Annotated[bool, Strict()]
OptionalFlag = Annotated[bool | None, Strict()]  # true, false or null (null: the problem's default)
Text = Annotated[str, Strict()]


class SpecError(ValueError):
    """An invalid spec: ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str) -> None:
        field, message = clip(str(field)), clip(message, 600)  # keys and values may come from anyone
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _bound(value: float | None) -> str:
    """``1,000,000`` for whole numbers (as the limits are written), ``0.5`` for others."""
    if value is not None and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:g}" if value is not None else ""


@dataclass(frozen=True)
class Range:
    """A field's interval, checked after its type: ``Annotated[Number, Range(0, 1, hi_open=True)]``
    says "must lie in [0, 1)" and gives the schema's ``minimum``/``exclusiveMaximum``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def says(self) -> str:
        lo, hi = _bound(self.lo), _bound(self.hi)
        if self.hi is None:
            return f"must be {'above' if self.lo_open else 'at least'} {lo}"
        if self.lo is None:
            return f"must be {'below' if self.hi_open else 'at most'} {hi}"
        return f"must lie in {'(['[not self.lo_open]}{lo}, {hi}{')]'[not self.hi_open]}"

    def _check(self, value: Any) -> Any:
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high:
            raise PydanticCustomError("range", "{says}, got {value}", {"says": self.says(), "value": shown(value)})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        out = dict(handler(schema))
        if self.lo is not None:
            out["exclusiveMinimum" if self.lo_open else "minimum"] = self.lo
        if self.hi is not None:
            out["exclusiveMaximum" if self.hi_open else "maximum"] = self.hi
        return out


# What a pydantic error type means, in the spec's words ("<path>: expected a whole number, got 'x'").
_EXPECTED = {
    "int_type": "expected a whole number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "dict_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}


def _path(section: str, loc: tuple[Any, ...]) -> str:
    path = section
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{clip(str(part))}"
    return path


def _allowed_keys(cls: type, loc: tuple[Any, ...]) -> list[str]:
    """The keys of the (nested) section at ``loc`` of ``cls``, read from its JSON Schema."""
    root = _adapter(cls).json_schema()
    schema: dict[str, Any] = root
    for part in loc:
        schema = schema.get("properties", {}).get(part, {})
        for option in schema.get("anyOf", [schema]):
            if "$ref" in option:
                schema = root["$defs"][option["$ref"].rpartition("/")[2]]
    return list(schema.get("properties", {}))


def _message(error: Any, optional: bool, cls: type) -> str:
    kind, value = error["type"], error["input"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown key; allowed: {', '.join(_allowed_keys(cls, tuple(error['loc'])[:-1]))}"
    if kind == "range":
        return str(error["msg"])
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(error["ctx"]["expected"])))
        if not isinstance(value, str):
            return f"expected text (one of {choices}), got {shown(value)}"
        return f"{shown(value)} is not available; choose one of {choices}"
    if kind == "bool_type" and optional:
        return f"expected true, false or null (the problem's default), got {shown(value)}"
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        kind = "finite_number"  # an int too large for a float
    return f"{_EXPECTED.get(kind, clip(str(error['msg'])))}, got {shown(value)}"


@cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


@cache
def _optional_flags(cls: type) -> frozenset[str]:
    """The fields of ``cls`` that take null too (their type errors name null as a choice)."""
    properties = _adapter(cls).json_schema()["properties"]
    return frozenset(k for k, p in properties.items() if {"type": "null"} in p.get("anyOf", ()))


def fill_section(section: str, cls: type, raw: Any) -> Any:
    """The dataclass ``cls`` filled from the mapping ``raw`` (``None``: all defaults) with its types checked;
    unknown keys and wrong types raise a :class:`SpecError` naming ``section.key``."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SpecError(section, f"expected a mapping, got {shown(raw)}")
    known = [f.name for f in fields(cls)]
    for key in raw:
        if key not in known:
            raise SpecError(f"{section}.{clip(str(key))}", f"unknown key; allowed: {', '.join(known)}")
    try:
        return _adapter(cls).validate_python(raw)
    except _ValidationError as e:
        error = e.errors(include_url=False)[0]
        loc = tuple(error["loc"])
        optional = len(loc) == 1 and error["type"] == "bool_type" and loc[0] in _optional_flags(cls)
        raise SpecError(_path(section, loc), _message(error, optional, cls)) from None


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
