"""Native (C++) parts of the engine, built on first use with ``torch.utils.cpp_extension``.

Each loader returns the compiled function, or ``None`` where it cannot be built (no C++ compiler,
no ninja, ``QCF_NATIVE=0`` in the environment); callers then use the Python version, which gives the
same numbers, only slower. The build takes about 30 s once per torch installation and source change and
is kept under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), in a folder named after the
hash of the source and of the torch installation (two versions of the source, or two venvs, never rebuild
over each other); ``make install`` does it, so that the first training does not wait for it.

A build interrupted (Ctrl-C, a killed worker) leaves torch's build lock behind, and every later load
would wait on it forever: a lock older than :data:`STALE_LOCK_SECONDS` is removed, with a warning. A younger
lock is waited on for at most :data:`LOCK_WAIT_SECONDS` (another process's build finishes in that time); past
it the process goes on with the Python block, with a warning, rather than hang.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "pass_block",
    "native_enabled",
    "extension_name",
    "build_folders",
    "STALE_LOCK_SECONDS",
    "LOCK_WAIT_SECONDS",
]

STALE_LOCK_SECONDS = 600  # a build takes about 30 s; a lock this old was left by a build that was interrupted
LOCK_WAIT_SECONDS = 120.0  # how long a load waits on a younger lock before it goes on without the native block


def extension_name(source: Path) -> str:
    """The extension's name: ``qcf_pass_block_`` and the first 12 hex digits of the SHA-256 of the source and of
    the torch it is built against (its folder and version: two venvs on one machine, each with its own torch,
    build their own copies instead of rebuilding one over the other's)."""
    import torch

    digest = hashlib.sha256(source.read_bytes())
    digest.update(f"\0{Path(torch.__file__).resolve().parent}\0{torch.__version__}".encode())
    return "qcf_pass_block_" + digest.hexdigest()[:12]


def _remove_stale_locks(root: Path, name: str) -> None:
    """Remove build locks of ``name`` under ``root`` older than :data:`STALE_LOCK_SECONDS`."""
    for lock in _locks(root, name):
        try:
            age = time.time() - lock.stat().st_mtime
            if age > STALE_LOCK_SECONDS:
                lock.unlink()
                warnings.warn(
                    f"removed {lock}, left {age / 60:.0f} min ago by an interrupted build of the C++ pass block",
                    RuntimeWarning,
                    stacklevel=3,
                )
        except OSError:  # removed meanwhile, or not ours to remove: torch's own wait follows
            pass


def build_folders(root: Path, name: str) -> list[Path]:
    """The build folders of ``name`` under ``root``: ``root/<python and device tag>/name`` (torch's default
    root) or ``root/name`` (``TORCH_EXTENSIONS_DIR``)."""
    return [*root.glob(f"*/{name}"), *root.glob(name)]


def _locks(root: Path, name: str) -> list[Path]:
    return [lock for folder in build_folders(root, name) if (lock := folder / "lock").exists()]


def _wait_for_locks(root: Path, name: str) -> bool:
    """Wait until no build lock of ``name`` is left under ``root``, for at most :data:`LOCK_WAIT_SECONDS`;
    ``False`` if one is still there."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while _locks(root, name):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def native_enabled() -> bool:
    """Whether native code may be used: not when ``QCF_NATIVE=0`` is set."""
    return os.environ.get("QCF_NATIVE", "1").strip() != "0"


@functools.cache
def pass_block() -> Callable[..., None] | None:
    """The discriminator pass's block, :func:`qcf_studio.engine.accel.blocks.pass_block` in C++ (bit-identical;
    float32, contiguous rows, CPU), or ``None`` where it cannot be built."""
    if not native_enabled():
        return None
    source = Path(__file__).with_name("pass_block.cpp")
    try:
        from torch.utils.cpp_extension import get_default_build_root, load

        bindir = os.path.dirname(sys.executable)  # pip's ninja lives beside the interpreter of a venv not activated
        if shutil.which("ninja") is None and shutil.which("ninja", path=bindir):
            os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        # builds go to $TORCH_EXTENSIONS_DIR/<name>/ or to <default root>/<python and device tag>/<name>/
        root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
        name = extension_name(source)
        _remove_stale_locks(root, name)
        if not _wait_for_locks(root, name):  # torch's load would wait on it with no end
            warnings.warn(
                f"the discriminator pass runs without its native block: another build of it has held its lock for "
                f"over {LOCK_WAIT_SECONDS:.0f} s (a build killed less than {STALE_LOCK_SECONDS // 60} min ago "
                "leaves one; it is removed after that)",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        if not any(any(folder.glob("*.so")) for folder in build_folders(root, name)):
            print("qcf-studio: building the discriminator pass's C++ block (once, about 30 s)", file=sys.stderr)
        module = load(name=name, sources=[str(source)], extra_cflags=["-O3"], verbose=False)
    except Exception as err:  # noqa: BLE001 - any failure means: the Python block
        warnings.warn(
            f"the discriminator pass runs without its native block: building {source.name} failed "
            f"({type(err).__name__}: {str(err).strip()[:300]})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module.pass_block
