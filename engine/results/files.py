"""Writing result and data files so that nothing is lost and nothing is overwritten.

- A NetCDF file is serialised in memory first (:func:`netcdf_bytes`), so HDF5 never meets a full disk
  (it crashed the process there); the bytes are written to a temporary ``.<stem>-XXXX.nc.part`` file
  beside the target, synced, and linked into place under a name that must not exist yet
  (:func:`write_new_file`): two processes saving at the same moment get two files, never one.
- A run that trained and cannot be saved where it was asked (disk full, no permission) is saved in the
  first rescue directory that takes it (:func:`save_run`), and the message says where.
- ``.part`` files left by a process that was killed while writing are removed on the next start
  (:func:`remove_stale_parts`); :func:`check_writable` tries a directory before any work goes into it.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

__all__ = [
    "netcdf_bytes",
    "write_new_file",
    "replace_file",
    "write_netcdf_atomic",
    "write_netcdf_unique",
    "save_run",
    "SavedRun",
    "remove_stale_parts",
    "check_writable",
    "rescue_dirs",
    "PART_SUFFIX",
]

PART_SUFFIX = ".part"
STALE_PART_SECONDS = 600  # a .part file this old belongs to no living writer (writes take seconds)


def netcdf_bytes(ds: xr.Dataset) -> bytes:
    """``ds`` as the bytes of a NetCDF-4 file (h5netcdf), made in memory."""
    dask = sys.modules.get("dask")  # loaded by a Dask client in this process, never imported here
    if dask is None:
        return bytes(ds.to_netcdf(engine="h5netcdf"))
    # With a distributed client xarray locks the in-memory target with a cluster-wide lock named after the
    # buffer object, which the scheduler does not know; the arrays are in memory, so no lock is needed.
    with dask.config.set(scheduler="synchronous"):
        return bytes(ds.to_netcdf(engine="h5netcdf"))


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


def write_new_file(content: bytes, path: str | Path) -> Path:
    """Write ``content`` to ``path``, which must not exist; all or nothing.

    Raises ``FileExistsError`` if ``path`` exists (also when another process claims it at the same
    moment) and ``OSError`` if the directory is missing or not writable or the disk is full; no
    temporary file is left behind in any case.
    """
    path = Path(path)
    with _synced_part(content, path) as tmp:
        _link_new(tmp, path)
    return path


@contextmanager
def _synced_part(content: bytes, path: Path) -> Iterator[str]:
    """``content`` in a synced ``.part`` file beside ``path``, removed (if still there) afterwards."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix + PART_SUFFIX, dir=path.parent)
    try:
        try:
            _write_all(fd, content)
            os.fchmod(fd, 0o644)  # mkstemp makes it private; results are meant to be shared
            os.fsync(fd)
        finally:
            os.close(fd)
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


def _link_new(tmp: str, path: Path) -> None:
    """Give the finished ``tmp`` the name ``path`` only if that name is free, atomically."""
    try:
        os.link(tmp, path)  # fails with EEXIST if the name is taken: no check-then-replace race
        return
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
    # A file system without hard links: claim the name first, then move the file over the empty claim.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.replace(tmp, path)


def replace_file(content: bytes, path: str | Path) -> Path:
    """Write ``content`` to ``path`` through a synced temporary file renamed over it: readers see the old
    file or the new one, never a part. Only for files derived from others (a campaign's summary), which
    can be made again; results themselves are never replaced (:func:`write_new_file`)."""
    path = Path(path)
    with _synced_part(content, path) as tmp:
        os.replace(tmp, path)
    return path


def write_netcdf_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` as a new NetCDF file ``path`` (see :func:`write_new_file`; never overwrites)."""
    return write_new_file(netcdf_bytes(ds), path)


def write_netcdf_unique(ds: xr.Dataset, directory: str | Path, stem: str, content: bytes | None = None) -> Path:
    """Write ``ds`` as ``directory/<stem>.nc``, or ``<stem>-2.nc``, ``-3``, ... if taken; returns the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    content = netcdf_bytes(ds) if content is None else content
    for i in range(1, 10_000):
        path = directory / (f"{stem}.nc" if i == 1 else f"{stem}-{i}.nc")
        if path.exists():
            continue
        try:
            return write_new_file(content, path)
        except FileExistsError:  # claimed by another writer between the look and the link
            continue
    raise FileExistsError(f"{directory}: 10 000 files named {stem}-N.nc exist already")


def rescue_dirs() -> list[Path]:
    """Where a run goes when its own directory cannot take it: ``$QCF_STUDIO_RESCUE_DIR`` if set, then
    ``qcf-studio-rescued`` in the temporary directory, then ``~/.cache/qcf-studio/rescued``."""
    dirs = [Path(os.environ["QCF_STUDIO_RESCUE_DIR"])] if os.environ.get("QCF_STUDIO_RESCUE_DIR") else []
    dirs.append(Path(tempfile.gettempdir()) / "qcf-studio-rescued")
    dirs.append(Path.home() / ".cache" / "qcf-studio" / "rescued")
    return dirs


@dataclass(frozen=True)
class SavedRun:
    """Where :func:`save_run` put a run: ``path`` (``None`` if nowhere) and, if not where it was asked,
    ``problem``, a sentence on what went wrong and where the file is instead."""

    path: Path | None
    problem: str = ""

    @property
    def rescued(self) -> bool:
        return self.path is not None and bool(self.problem)


def save_run(ds: xr.Dataset, directory: str | Path, stem: str) -> SavedRun:
    """Save a finished run as ``directory/<stem>[-N].nc``; never raises for I/O.

    If ``directory`` cannot take it (disk full, permissions), the same bytes go to the first of
    :func:`rescue_dirs` that takes them, and :attr:`SavedRun.problem` says why and where; if none
    does, ``path`` is ``None`` and ``problem`` says why the run is lost.
    """
    content = netcdf_bytes(ds)
    try:
        return SavedRun(write_netcdf_unique(ds, directory, stem, content))
    except OSError as e:
        why = f"cannot write the run into {directory}: {e.strerror or e}"
    tried = []
    for rescue in rescue_dirs():
        try:
            path = write_netcdf_unique(ds, rescue, stem, content)
        except OSError as e:
            tried.append(f"{rescue} ({e.strerror or e})")
            continue
        return SavedRun(path, f"{why}; the run was saved to {path} instead")
    return SavedRun(None, f"{why}; no rescue directory took it either ({'; '.join(tried)}): the run is lost")


def remove_stale_parts(directory: str | Path, older_than: float = STALE_PART_SECONDS) -> list[Path]:
    """Delete the ``.*.part`` files in ``directory`` older than ``older_than`` seconds (left by killed
    writers); returns what was removed. Younger ones may belong to a writer at work and are kept."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    now = time.time()
    for path in directory.glob(f".*{PART_SUFFIX}"):
        try:
            if path.is_file() and not path.is_symlink() and now - path.stat().st_mtime > older_than:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def check_writable(directory: str | Path, option: str = "--out") -> Path:
    """Prove that files can be made in ``directory`` (or, if it does not exist yet, that it can be created
    there: it is made only when the first file is written); ``ValueError`` naming ``option`` and the
    reason otherwise, before any work goes into a run."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: writing through it would go somewhere else
            raise ValueError(f"{option} {directory}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a directory" if existing == directory else f"{existing} is not a directory"
        raise ValueError(f"{option} {directory}: {what}")
    try:
        if existing == directory:
            fd, probe = tempfile.mkstemp(prefix=".qcf-write-test-", suffix=PART_SUFFIX, dir=directory)
            os.close(fd)
            os.unlink(probe)
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise ValueError(f"{option} {directory}: cannot write there ({e.strerror or type(e).__name__})") from None
    return directory
