"""Keep freed heap memory in the process, so that large temporaries do not page-fault each time.

glibc returns freed memory to the kernel eagerly: blocks above ``M_MMAP_THRESHOLD`` are mapped and
unmapped per allocation, and the heap's top is trimmed whenever more than ``M_TRIM_THRESHOLD`` of it
is free. A torch computation that makes tens of multi-megabyte temporaries per call then pays a
page fault for every 4 KiB of each, every call. The process keeps the freed memory for reuse instead
(at most its peak use plus :data:`TRIM_THRESHOLD`; the faults and times it saves: docs/benchmarks.md,
"Numbers behind engine/accel").

The thresholds are the process's: they apply to every thread's arena, and override the environment's
``MALLOC_TRIM_THRESHOLD_``, which Dask sets to 64 KiB for the workers it starts (the training tasks
make this call through :func:`qcf_studio.engine.gan.accelerator.tune_process`). A no-op where the C library is not
glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap and are reused
TRIM_THRESHOLD = 512 << 20  # free memory at the heap's top kept before returning it


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; ``True`` if both took effect."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mmap_ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and mmap_ok
