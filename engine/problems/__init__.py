"""Registry of proxy problems keyed by ``problem.kind``.

A user adds a problem by subclassing :class:`Problem` and decorating it with
:func:`register_problem`; it then appears in the spec validation, the CLI and the dashboard.
"""

from __future__ import annotations

from qcf_studio.engine.problem_catalog import describe
from qcf_studio.engine.problems.base import Problem

__all__ = ["Problem", "register_problem", "get_problem", "problem_kinds"]

_REGISTRY: dict[str, type[Problem]] = {}


def register_problem(cls: type[Problem]) -> type[Problem]:
    """Class decorator that makes ``cls`` available as ``problem.kind: cls.kind``; its data go to the
    torch-free catalog (:mod:`qcf_studio.engine.problem_catalog`) that specs are validated against."""
    try:
        info = cls.describe()  # checks that truth and bounds have a value per parameter, lo < hi
    except ValueError as e:
        raise ValueError(f"{cls.__name__}: {e}") from None
    describe(info)
    _REGISTRY[cls.kind] = cls
    return cls


def get_problem(kind: str) -> Problem:
    """An instance of the problem registered as ``kind``; ``KeyError`` names the known kinds."""
    try:
        return _REGISTRY[kind]()
    except KeyError:
        raise KeyError(f"unknown problem kind {kind!r}; known: {', '.join(problem_kinds())}") from None


def problem_kinds() -> list[str]:
    return sorted(_REGISTRY)


# Built-in problems register themselves on import.
from qcf_studio.engine.problems import gauss6, proxy1d, proxy2d  # noqa: E402,F401


def _load_user_problems() -> None:
    """Import the modules that register user problems: the ``qcf_studio.problems`` entry points of
    installed packages and the comma-separated module names in ``$QCF_STUDIO_PROBLEMS``. Dask
    workers import this package too, so they know the same problems."""
    import importlib
    import os
    from importlib.metadata import entry_points

    for ep in entry_points(group="qcf_studio.problems"):
        ep.load()
    for name in filter(None, (m.strip() for m in os.environ.get("QCF_STUDIO_PROBLEMS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"QCF_STUDIO_PROBLEMS: cannot import {name!r}: {e}") from e


_load_user_problems()
