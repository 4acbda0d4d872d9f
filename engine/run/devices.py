"""Which torch device a member trains on, resolved in the process that trains it (no Dask here).

``cluster.device`` is ``auto`` (CUDA where this process sees a GPU, else the CPU), ``cpu`` or
``cuda`` (a GPU or an error). It is resolved on the worker, not on the client: the client's
machine need not have the workers' GPUs.
"""

from __future__ import annotations

import re

import torch

from qcf_studio.engine.choices import DEVICES

__all__ = ["DEVICES", "resolve_device", "cuda_index"]


_TRAILING_INDEX = re.compile(r"^(?:\d+|.*-(\d+))$")  # 3, "3", "gpu-3"; never a tcp://host:port address


def cuda_index(name: object, count: int) -> int:
    """The GPU (of ``count`` visible ones) a worker named ``name`` trains on.

    ``k mod count`` for a worker named ``k`` or ``<prefix>-k``: the embedded LocalCluster names its
    workers 0, 1, ... and ``dask worker --nworkers N --name gpu`` names them gpu-0, gpu-1, ...; any
    other name (a worker named after its address) gets GPU 0, so such workers should each see one
    GPU (``CUDA_VISIBLE_DEVICES``).
    """
    if count < 1:
        raise ValueError(f"no CUDA device to choose from (count {count})")
    m = _TRAILING_INDEX.match(str(name))
    if m is None:
        return 0
    return int(m[1] if m[1] is not None else str(name)) % count


def resolve_device(requested: str, worker: str = "this process", name: object = None) -> torch.device:
    """The device for ``cluster.device = requested`` in this process.

    Arguments:
        requested: ``auto``, ``cpu`` or ``cuda``.
        worker: where this runs, for the error message (a Dask worker's address).
        name: the worker's name, which picks the GPU when several are visible (:func:`cuda_index`).

    Raises:
        RuntimeError: ``cuda`` was requested but this process has no CUDA device.
    """
    if requested not in DEVICES:
        raise ValueError(f"cluster.device: {requested!r} is not available; choose one of {', '.join(DEVICES)}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"worker {worker}: cluster.device is cuda but this worker has no CUDA device (torch {torch.__version__}, "
            f"torch.cuda.is_available() is False); give GPU=1 only to workers that have a GPU, or use "
            f"cluster.device auto or cpu"
        )
    return torch.device("cuda", cuda_index(name, torch.cuda.device_count()))
