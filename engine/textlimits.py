"""Bounded text for messages: a value from a spec or a file is shown, never echoed whole.

A YAML alias bomb is a few hundred bytes that expand to a structure whose ``repr`` has gigabytes; a file
name or a key may be megabytes long. :func:`shown` uses :mod:`reprlib`, which looks at no more of a nested
value than it prints, so it is cheap on any input.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["shown", "clip", "clip_path", "SHOWN_CHARS"]

SHOWN_CHARS = 100

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = 6
_repr.maxstring = _repr.maxother = _repr.maxlong = SHOWN_CHARS


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters (ending in ``...`` when cut), control characters escaped."""
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return "".join(c if c.isprintable() or c in " " else repr(c)[1:-1] for c in text)


def clip_path(path: Any, limit: int = SHOWN_CHARS) -> str:
    """A file's path in at most ``limit`` characters: its end kept (the file's name says most), ``...`` in front when
    cut, control characters escaped."""
    text = str(path)
    if len(text) > limit:
        text = "..." + text[len(text) - max(limit - 3, 0) :]
    return clip(text, limit)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """The ``repr`` of ``value`` in at most ``limit`` characters (for text in messages as they are: :func:`clip`)."""
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 (e.g. an int past Python's 4300-digit str limit)
        text = f"<{type(value).__name__}>"
    return clip(text, limit)
