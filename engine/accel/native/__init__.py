"""Native (C++) parts of the engine, built on first use with ``torch.utils.cpp_extension``.

Each loader returns the compiled function, or ``None`` where it cannot be built (no C++ compiler,
no ninja, ``QCF_NATIVE=0`` in the environment); callers then use the Python version, which gives the
same numbers, only slower. The build takes about 30 s once per torch version and source change and
is kept under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``); ``make install``
does it, so that the first training does not wait for it.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

__all__ = ["pass_block", "native_enabled"]


def native_enabled() -> bool:
    """Whether native code may be used: not when ``QCF_NATIVE=0`` is set."""
    return os.environ.get("QCF_NATIVE", "1").strip() != "0"


@functools.cache
def pass_block() -> Callable[..., None] | None:
    """The discriminator pass's block, :func:`engine.accel.blocks.pass_block` in C++ (bit-identical;
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
        if not any(root.glob("*/qcf_pass_block/qcf_pass_block*.so")) and not any(root.glob("qcf_pass_block/*.so")):
            print("qcf-studio: building the discriminator pass's C++ block (once, about 30 s)", file=sys.stderr)
        module = load(name="qcf_pass_block", sources=[str(source)], extra_cflags=["-O3"], verbose=False)
    except Exception as err:  # noqa: BLE001 - any failure means: the Python block
        warnings.warn(
            f"the discriminator pass runs without its native block: building {source.name} failed "
            f"({type(err).__name__}: {str(err).strip()[:300]})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module.pass_block
