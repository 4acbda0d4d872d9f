"""Opening NetCDF-4 (HDF5) files that someone else made: refuse what could read other files or exhaust memory.

An HDF5 file can make the library read *other* files when a value is read: a dataset's raw data may live in
external files (``H5Pset_external``), a virtual dataset maps other files' datasets, and an external link
names an object in another file. Any of these in an uploaded file would let it read whatever the server can
read. Compressed datasets can also declare far more data than the file holds. :func:`check_hdf5` walks the
whole file through its links without following them and refuses all of that *before any value is read*;
:func:`open_netcdf` checks and then loads the file with xarray from the same open file (no second lookup of
the path); :func:`opened_netcdf` gives the same file lazily, for readers that read a large dataset in slices.
Messages name the file and the object, never its contents.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from stat import S_ISREG
from typing import IO

import h5py
import xarray as xr

from qcf_studio.engine.textlimits import clip

__all__ = [
    "UnsafeFileError",
    "check_hdf5",
    "checked_hdf5",
    "open_netcdf",
    "opened_netcdf",
    "HDF5_SIGNATURE",
    "ALLOWED_FILTERS",
    "MAX_OBJECTS",
    "MAX_ATTRIBUTE_BYTES",
]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5's own filters and h5py's LZF: a file naming any other filter would make HDF5 look for a plugin library.
ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
MAX_OBJECTS = 10_000  # groups, datasets and links in one file (a results file has about 40)
MAX_ATTRIBUTE_BYTES = 16 * 2**20  # all attributes together (a results file's spec attribute is a few kB)


class UnsafeFileError(ValueError):
    """A file that is refused before any of its values is read; the message names the file and why."""


def check_hdf5(
    f: h5py.File, label: str, max_data_bytes: int, bounded_apart: Mapping[str, tuple[int, str]] | None = None
) -> int:
    """Walk every link of the open file ``f``; return the bytes its datasets declare.

    The datasets at the paths of ``bounded_apart`` (e.g. ``{"/events": (10_000_000, "limits.events ...")}``) are
    checked like every other but do not count towards ``max_data_bytes``: each may declare at most the number of
    values given (the text says why, in the message), whatever its type; the caller checks their shape and type
    before reading any of their values (in slices). A second name for such a dataset counts as any dataset does.

    Raises :class:`UnsafeFileError` (naming ``label`` and the object) for external links, soft links,
    externally stored or virtual datasets, filters other than :data:`ALLOWED_FILTERS`, more than
    :data:`MAX_OBJECTS` objects, attributes over :data:`MAX_ATTRIBUTE_BYTES`, or datasets declaring more
    than ``max_data_bytes`` in all (uncompressed).
    """
    declared = 0
    attribute_bytes = 0
    objects = 0
    seen: set = set()
    pending: list[tuple[str, h5py.Group]] = [("/", f)]

    def attributes(obj: h5py.HLObject, where: str) -> None:
        nonlocal attribute_bytes
        for name in obj.attrs:
            attribute_bytes += obj.attrs.get_id(name).get_storage_size()
            if attribute_bytes > MAX_ATTRIBUTE_BYTES:
                raise UnsafeFileError(
                    f"{label}: the attributes of {clip(where)} exceed {MAX_ATTRIBUTE_BYTES // 2**20} MiB"
                )

    attributes(f, "/")
    while pending:
        path, group = pending.pop()
        for name in group:
            objects += 1
            if objects > MAX_OBJECTS:
                raise UnsafeFileError(f"{label}: more than {MAX_OBJECTS:,} objects; not a qcf-studio file")
            where = f"{path.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise UnsafeFileError(f"{label}: {clip(where)} is an external link to another file; refused")
            if not isinstance(link, h5py.HardLink):
                raise UnsafeFileError(f"{label}: {clip(where)} is a soft link; links are refused")
            obj = group.get(name)
            key = _address(obj)
            apart = bounded_apart is not None and where in bounded_apart  # under a second name: as any dataset
            if key in seen and not apart:
                continue  # the same object under a second name: checked once
            if not apart:
                seen.add(key)
            attributes(obj, where)
            if isinstance(obj, h5py.Group):
                pending.append((where, obj))
            elif isinstance(obj, h5py.Dataset):
                size = _check_dataset(obj, label, where)
                if apart and bounded_apart is not None:
                    most, why = bounded_apart[where]
                    if obj.size > most:
                        raise UnsafeFileError(
                            f"{label}: {clip(where)} declares {obj.size:,} values, more than the {most:,} {why}"
                        )
                declared += 0 if apart else size
                if declared > max_data_bytes:
                    raise UnsafeFileError(
                        f"{label}: its datasets declare more than {max_data_bytes / 2**20:,.0f} MiB "
                        f"of data (at {clip(where)}); the limit for this file is "
                        f"{max_data_bytes / 2**20:,.0f} MiB"
                    )
    return declared


def _address(obj: h5py.HLObject) -> object:
    info = h5py.h5o.get_info(obj.id)
    return getattr(info, "token", None) or info.addr


def _check_dataset(d: h5py.Dataset, label: str, where: str) -> int:
    if d.is_virtual:
        raise UnsafeFileError(f"{label}: {clip(where)} is a virtual dataset (it maps other files); refused")
    if d.external:
        raise UnsafeFileError(f"{label}: {clip(where)} keeps its data in external files; refused")
    plist = d.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            raise UnsafeFileError(
                f"{label}: {clip(where)} uses HDF5 filter {code}, which is not one of "
                f"{', '.join(ALLOWED_FILTERS.values())}; refused"
            )
    return int(d.size) * int(d.dtype.itemsize)


@contextmanager
def checked_hdf5(
    source: str | Path | bytes, label: str, *, max_file_bytes: int, max_data_bytes: int
) -> Iterator[h5py.File]:
    """The HDF5 file ``source`` (a path or the file's bytes), open for reading once :func:`check_hdf5`
    passed it. Raises as :func:`open_netcdf` does."""
    with _opened(source, label, max_file_bytes) as fobj:
        try:
            f = h5py.File(fobj, "r")
        except Exception as e:  # h5py raises many types for damaged files
            raise ValueError(f"{label}: not a readable NetCDF-4 file ({type(e).__name__}: {clip(str(e))})") from None
        with f:
            check_hdf5(f, label, max_data_bytes)
            yield f


def open_netcdf(source: str | Path | bytes, label: str, *, max_file_bytes: int, max_data_bytes: int) -> xr.Dataset:
    """The NetCDF-4 file ``source`` (a path or the file's bytes), checked by :func:`check_hdf5` and loaded
    into memory with the file closed.

    Raises :class:`UnsafeFileError` for a file over ``max_file_bytes``, one without the HDF5 signature, or
    one :func:`check_hdf5` refuses, and ``ValueError`` (naming ``label``) for a file HDF5 cannot read;
    ``FileNotFoundError`` for a path that cannot be opened. The check and the load read the same open file.
    """
    with _opened(source, label, max_file_bytes) as fobj:
        try:
            with h5py.File(fobj, "r") as f:
                check_hdf5(f, label, max_data_bytes)
            fobj.seek(0)
            with xr.open_dataset(fobj, engine="h5netcdf", phony_dims="sort") as ds:
                return ds.load()
        except UnsafeFileError:
            raise
        except Exception as e:  # h5py/h5netcdf raise many types for damaged files; their text is clipped
            raise ValueError(f"{label}: not a readable NetCDF-4 file ({type(e).__name__}: {clip(str(e))})") from None


@contextmanager
def opened_netcdf(
    source: str | Path | bytes,
    label: str,
    *,
    max_file_bytes: int,
    max_data_bytes: int,
    bounded_apart: Mapping[str, tuple[int, str]] | None = None,
) -> Iterator[xr.Dataset]:
    """The NetCDF-4 file ``source``, checked by :func:`check_hdf5` (``bounded_apart`` as there), open lazily:
    only its metadata and index coordinates are read; values are read when the caller asks (and must be within
    this ``with``). Raises as :func:`open_netcdf` does; errors reading values later are the caller's to catch."""
    with _opened(source, label, max_file_bytes) as fobj:
        try:
            with h5py.File(fobj, "r") as f:
                check_hdf5(f, label, max_data_bytes, bounded_apart)
            fobj.seek(0)
            ds = xr.open_dataset(fobj, engine="h5netcdf", phony_dims="sort")
        except UnsafeFileError:
            raise
        except Exception as e:  # h5py/h5netcdf raise many types for damaged files; their text is clipped
            raise ValueError(f"{label}: not a readable NetCDF-4 file ({type(e).__name__}: {clip(str(e))})") from None
        with ds:
            yield ds


@contextmanager
def _opened(source: str | Path | bytes, label: str, max_file_bytes: int) -> Iterator[IO[bytes]]:
    """``source`` as a binary file object at its start, after the size and signature checks."""
    if isinstance(source, bytes):
        fobj: IO[bytes] = io.BytesIO(source)
        size = len(source)
    else:
        try:
            fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"{label}: cannot open ({getattr(e, 'strerror', None) or type(e).__name__})"
            ) from None
        fobj = os.fdopen(fd, "rb")
    with fobj:
        if not isinstance(source, bytes):
            stat = os.fstat(fobj.fileno())
            if not S_ISREG(stat.st_mode):
                raise UnsafeFileError(f"{label}: not a regular file")
            size = stat.st_size
        if size > max_file_bytes:
            raise UnsafeFileError(
                f"{label}: {size / 2**20:,.1f} MiB, more than the limit of "
                f"{max_file_bytes / 2**20:,.0f} MiB for this file"
            )
        if fobj.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise UnsafeFileError(f"{label}: not a NetCDF-4 (HDF5) file")
        fobj.seek(0)
        yield fobj
