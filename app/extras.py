"""The optional parts of qcf-studio and the packages each needs (pyproject.toml's extras).

A worker-only install (``pip install qcf-studio``, or ``qcf-studio[hpc]``) has the engine, Dask and the headless
commands, without the web stack and matplotlib. What needs them (``serve``, ``credentials``, ``export``, the notebook
views) calls :func:`require_extra` first, so that a missing extra is one sentence naming what to install, not a
traceback from deep inside an import.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["EXTRAS", "MissingExtraError", "require_extra"]

# import names of each extra's packages, as listed in pyproject.toml
EXTRAS: dict[str, tuple[str, ...]] = {
    "dashboard": ("panel", "holoviews", "bokeh", "matplotlib"),
    "hpc": ("dask_jobqueue",),
}


class MissingExtraError(ImportError):
    """A part of qcf-studio was used whose optional packages are not installed."""


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    return importlib.util.find_spec(module) is not None


def require_extra(extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` unless every package of ``extra`` can be imported.

    Arguments:
        extra: a key of :data:`EXTRAS`.
        purpose: what needs it, as the message names it (``qcf-studio serve``).
    """
    missing = [m for m in EXTRAS[extra] if not _installed(m)]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {', '.join(missing)}, which this installation lacks: pip install 'qcf-studio[{extra}]'",
            name=missing[0],
        )
