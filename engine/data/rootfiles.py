"""Measured events from ROOT files (uproot, the optional extra ``qcf-studio[io]``), read from TTrees in chunks.

Layout: each observable's events are the entries of a TTree, one number per entry in each branch. By default
(``problem.columns`` null) the tree is named after the observable (``sigma1``, ``sigma2``) with branches ``x``
(``x, y`` for 2D problems) and, if the tree has one, ``weight``; ``problem.columns`` names other trees and
branches (``sigma1: {tree: events, x: xB, weight: sw}``; several observables may share a tree). The
observables may have different numbers of entries. Cross sections are ``problem.xsec`` or a TObjString ``xsec``
in the file (CSV's syntax); a TObjString ``resolution`` plays CSV's ``# resolution:``.

A file from someone else is checked before its values are read: every object the reader touches (trees, strings,
the streamer list) declares at most :data:`MAX_ROOT_OBJECT_BYTES` uncompressed, and every basket of a branch no
more than its entries need (so a small file cannot decompress into gigabytes); trees hold at most
``limits.events`` entries; branches hold plain numbers (not jagged arrays, strings or objects). Branches are
read by name, never as uproot expressions (which would evaluate the spec's text as code). Every failure of
uproot on a damaged or truncated file becomes a :class:`~qcf_studio.engine.data.filechecks.DataFileError` naming the
file,
the tree and the branch, without the file's contents.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qcf_studio.engine.data.filechecks import DataFileError, file_resolution
from qcf_studio.engine.data.measured import MeasuredData
from qcf_studio.engine.data.parquetfiles import file_setting
from qcf_studio.engine.data.tables import Gathered, measured_from, optional_module, quoted, standard_columns
from qcf_studio.engine.problem_catalog import ProblemInfo
from qcf_studio.engine.spec_data import DataColumns
from qcf_studio.engine.textlimits import clip

__all__ = ["read_root", "ROOT_SIGNATURE", "MAX_ROOT_OBJECT_BYTES"]

ROOT_SIGNATURE = b"root"
MAX_ROOT_OBJECT_BYTES = 64 * 2**20  # a TTree's metadata (basket lists) or a string, uncompressed
_BASKET_SLACK = 4096  # bytes a basket may hold past its entries' numbers
_STEP = 1 << 20  # entries per chunk
_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD")


def read_root(
    label: str,
    source: bytes | Path,
    problem: ProblemInfo,
    columns: Mapping[str, DataColumns] | None,
    xsec: Mapping[str, Sequence[float]] | None,
    max_events: int,
) -> MeasuredData:
    """The measured data of ``problem`` in the ROOT file ``source`` (its bytes, or a path read in chunks)."""
    uproot = optional_module("uproot", label, "ROOT")
    try:
        # a Path, never a str: uproot would read "file.root:tree" as an object path and "root://..." as a URL
        f = uproot.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source), array_cache=None)
        classes = {str(k): str(v) for k, v in f.classnames(recursive=False, cycle=False).items()}
    except Exception as e:  # noqa: BLE001 (uproot's errors for a damaged file vary)
        raise DataFileError(f"{label}: not a readable ROOT file ({_damaged(e)})") from None
    with f:
        _check_streamer_list(uproot, label, f)
        file_xsec = _string(label, f, classes, "xsec")
        resolution = file_resolution(label, _string(label, f, classes, "resolution"))
        mapped = columns is not None
        trees: dict[str, Any] = {}
        plan = []
        for n in problem.observable_names:
            name = (columns[n].tree or n) if columns is not None else n
            if name not in trees:
                trees[name] = _tree(label, f, classes, name, n, mapped, max_events)
            tree = trees[name]
            cols = columns[n] if columns is not None else standard_columns(problem, "weight" in tree)
            plan.append((n, name, tree, cols))
        gathered = []
        for n, name, tree, cols in plan:
            coords = [cols.x, *([cols.y] if cols.y else [])]
            branches = [_branch(label, tree, name, b, n, mapped, k) for b, k in zip(coords, "xy")]
            weight = _branch(label, tree, name, cols.weight, n, mapped, "weight") if cols.weight else None
            column = f"tree {quoted(name)}, branch"
            g = Gathered(label, problem, n, coords, cols.weight, resolution, max_events, "entry", column)
            _read(label, name, tree.num_entries, branches, weight, g)
            gathered.append(g)
    return measured_from(label, problem, gathered, xsec, file_xsec)


def _damaged(e: Exception) -> str:
    """Why uproot failed, without its message (which may quote the file)."""
    kind = type(e)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return f"a damaged or truncated file? {name}"


def _where(label: str, tree: str) -> str:
    return f"{label}: tree {quoted(tree)}"


def _declared(label: str, f: Any, name: str, what: str) -> None:
    """The key of ``name`` declares at most :data:`MAX_ROOT_OBJECT_BYTES` uncompressed."""
    try:
        size = int(f.key(name).data_uncompressed_bytes)
    except Exception as e:  # noqa: BLE001
        raise DataFileError(f"{label}: {what}: its key cannot be read ({_damaged(e)})") from None
    if size > MAX_ROOT_OBJECT_BYTES:
        raise DataFileError(
            f"{label}: {what} declares {size / 2**20:,.0f} MiB, more than {MAX_ROOT_OBJECT_BYTES / 2**20:,.0f} MiB"
        )


def _check_streamer_list(uproot: Any, label: str, f: Any) -> None:
    """The file's streamer list (read when a class version is not built in) declares a bounded size."""
    file = f.file
    seek = int(getattr(file, "fSeekInfo", 0) or 0)
    if not seek:
        return
    try:
        key_format = uproot.reading._key_format_big  # noqa: SLF001 (uproot reads the same header so)
        chunk = file.chunk(seek, min(seek + key_format.size, file.fEND))
        key = uproot.reading.ReadOnlyKey(chunk, uproot.source.cursor.Cursor(seek), {}, file, file)
        size = int(key.data_uncompressed_bytes)
    except Exception as e:  # noqa: BLE001
        raise DataFileError(f"{label}: its list of streamers cannot be read ({_damaged(e)})") from None
    if size > MAX_ROOT_OBJECT_BYTES:
        raise DataFileError(f"{label}: its list of streamers declares {size / 2**20:,.0f} MiB; refused")


def _string(label: str, f: Any, classes: dict[str, str], name: str) -> str | None:
    """The file's TObjString ``name`` (``xsec``, ``resolution``), or ``None`` without one."""
    if name not in classes:
        return None
    if classes[name] != "TObjString":
        raise DataFileError(f"{label}: {name!r} is a {clip(classes[name], 40)}, not a TObjString (text)")
    _declared(label, f, name, f"the string {name!r}")
    try:
        return file_setting(label, name, str(f[name]))
    except DataFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataFileError(f"{label}: the string {name!r} cannot be read ({_damaged(e)})") from None


def _tree(label: str, f: Any, classes: dict[str, str], name: str, obs: str, mapped: bool, max_events: int) -> Any:
    field = f"problem.columns.{obs}.tree" if mapped else None
    if name not in classes:
        trees = [k for k, v in classes.items() if v in _TREE_CLASSES]
        how = (
            "" if mapped else "; the standard layout has a TTree per observable named after it (or set problem.columns)"
        )
        raise DataFileError(
            f"{label}: no tree {quoted(name)} for observable {obs!r} (trees: {clip(', '.join(trees)) or 'none'}){how}",
            field,
        )
    kind = classes[name]
    if kind not in _TREE_CLASSES:
        hint = " (write a TTree: uproot's file.mktree)" if "RNTuple" in kind else ""
        raise DataFileError(f"{_where(label, name)} is a {clip(kind, 40)}, not a TTree{hint}", field)
    _declared(label, f, name, f"tree {quoted(name)}")
    try:
        tree = f[name]
        entries = int(tree.num_entries)
    except Exception as e:  # noqa: BLE001
        raise DataFileError(f"{_where(label, name)} cannot be read ({_damaged(e)})", field) from None
    if entries > max_events:
        raise DataFileError(
            f"{_where(label, name)} has {entries:,} entries, more than limits.events ({max_events:,}); a spec may "
            f"raise limits.events where the machine has the memory"
        )
    return tree


def _branch(label: str, tree: Any, tree_name: str, name: str, obs: str, mapped: bool, key: str) -> Any:
    """The branch ``name`` of ``tree``: present, one plain number per entry, baskets no larger than that needs."""
    where = f"{_where(label, tree_name)}, branch {quoted(name)}"
    field = f"problem.columns.{obs}.{key}" if mapped else None
    if name not in tree.keys():
        raise DataFileError(
            f"{_where(label, tree_name)}: no branch {quoted(name)} for observable {obs!r} "
            f"(branches: {clip(', '.join(tree.keys()))})",
            field,
        )
    try:
        branch = tree[name]
        interp = branch.interpretation
        dtype = getattr(interp, "from_dtype", None)
        plain = type(interp).__name__ == "AsDtype" and dtype is not None and dtype.shape == () and dtype.kind in "iuf"
    except Exception as e:  # noqa: BLE001
        raise DataFileError(f"{where} cannot be read ({_damaged(e)})", field) from None
    if not plain or dtype is None:
        raise DataFileError(f"{where} holds {clip(str(interp), 60)}, not one number per entry", field)
    if int(branch.num_entries) != int(tree.num_entries):
        raise DataFileError(f"{where} has {branch.num_entries:,} entries, its tree {tree.num_entries:,}")
    try:
        # the embedded baskets (the last ones) came with the tree's own record, bounded above
        for i in range(branch.num_baskets - len(branch.embedded_baskets)):
            start, stop = branch.basket_entry_start_stop(i)
            size = int(branch.basket_key(i).data_uncompressed_bytes)
            if size > (int(stop) - int(start)) * dtype.itemsize + _BASKET_SLACK:
                raise DataFileError(
                    f"{where}: basket {i} declares {size:,} bytes for {int(stop) - int(start):,} entries; refused"
                )
    except DataFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataFileError(f"{where}: its baskets cannot be read ({_damaged(e)})") from None
    return branch


def _read(label: str, tree: str, entries: int, coords: list[Any], weight: Any | None, g: Gathered) -> None:
    """The branches' entries in chunks of :data:`_STEP`, each checked by ``g`` as it arrives."""
    for start in range(0, entries, _STEP):
        stop = min(start + _STEP, entries)
        current = coords[0]
        try:
            arrays = []
            for branch in [*coords, *([weight] if weight is not None else [])]:
                current = branch
                arrays.append(np.asarray(branch.array(entry_start=start, entry_stop=stop, library="np")))
        except Exception as e:  # noqa: BLE001 (a truncated file, a damaged basket)
            raise DataFileError(
                f"{_where(label, tree)}, branch {quoted(current.name)}: cannot be read at entries "
                f"{start:,}-{stop:,} ({_damaged(e)})"
            ) from None
        g.add(arrays[: len(coords)], arrays[len(coords)] if weight is not None else None, start)
