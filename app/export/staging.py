"""Folders written all or nothing: the data exports (``hepdata``, ``grid``) fill a hidden staging folder in the
output directory and rename each finished output into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["Staging"]


class Staging:
    """A hidden folder ``.<stem>-XXXX.part`` in ``out`` to build outputs in (:meth:`path`); :meth:`commit` renames
    each into ``out`` (replacing one of the same name, whole), :meth:`discard` removes them all. Use it as a context
    manager: the staging folder is gone afterwards either way."""

    def __init__(self, out: Path, stem: str) -> None:
        self.out = out
        self.stage = Path(tempfile.mkdtemp(prefix=f".{stem}-", suffix=".part", dir=out))

    def path(self, name: str) -> Path:
        """Where to build the output ``name`` (a file or a folder)."""
        return self.stage / name

    def commit(self, names: list[str]) -> list[Path]:
        """Rename the outputs ``names`` into ``out``, in that order; returns their final paths. Each one is whole
        where it lands: a previous output of the same name is moved aside first and removed with the staging."""
        placed = []
        for i, name in enumerate(names):
            final = self.out / name
            if final.exists() or final.is_symlink():
                os.replace(final, self.stage / f".replaced-{i}")  # (a symbolic link is moved, not followed)
            os.replace(self.stage / name, final)
            placed.append(final)
        return placed

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
