"""Generator-gradient sharing between data-parallel ranks, on torch.distributed process groups.

Each rank trains its own discriminator on its own shard of the measured data (as in SAGIPS) and
shares only what concerns the one generator they train together. Two schedules:

- ``sync``: the generator's gradients are averaged over all ranks every step (one all-reduce of a
  flat vector), so every rank applies the same Adam update and the weights stay identical.
- ``grouped``: ranks form groups of ``group_size``; gradients are averaged within a group every
  step, and every ``sync_every`` steps the group leaders average the generator's weights and hand
  them on to their group (local-SGD style). Between those points groups drift apart, which
  trades a little statistical efficiency for ``sync_every``× fewer messages between groups.

The groups are ``ProcessGroupGloo`` objects for CPU ranks and ``ProcessGroupNCCL`` for CUDA ranks
(:func:`backend_for`; the NCCL path has not been run on a GPU by this project), built on a
store the caller provides (a ``TCPStore`` whose address the Dask scheduler passes around, see
``qcf_studio.engine.run.distributed``), not the process-wide default group: a Dask worker may host ranks of
several runs, one after another or at once. This module does not import Dask.

References:
    Lersch et al., "SAGIPS: a scalable asynchronous generative inverse problem solver",
    Mach. Learn.: Sci. Technol. 6 (2025) 025017, arXiv:2407.00051.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, cast

import torch
import torch.distributed as dist
from torch import Tensor

from qcf_studio.engine.choices import SCHEDULES

__all__ = ["SCHEDULES", "ShareSchedule", "GradientSharing", "backend_for", "host_store"]


@dataclass(frozen=True)
class ShareSchedule:
    """How ranks share: ``kind`` in :data:`SCHEDULES`; ``group_size`` and ``sync_every`` for ``grouped``."""

    kind: str = "sync"
    group_size: int = 1
    sync_every: int = 10


def backend_for(device: torch.device) -> str:
    """The collective backend for tensors on ``device``: ``nccl`` for CUDA, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def host_store(host: str, world: int, timeout: float) -> dist.TCPStore:
    """Rank 0's ``TCPStore``, listening on ``host``'s interface only.

    A ``TCPStore`` made the usual way listens on every interface of the machine, and anyone who reaches
    it can write into the rendezvous; bound to the worker's own address (loopback for the embedded
    cluster), it is reachable exactly where the Dask workers already talk to each other.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(128)
        port = sock.getsockname()[1]
    except OSError:
        sock.close()
        raise
    return dist.TCPStore(
        host, port, world, True, timedelta(seconds=timeout), wait_for_workers=False, master_listen_fd=sock.detach()
    )  # the store owns the socket from here


class _Group(Protocol):
    """What this module calls on a group: ``ProcessGroupGloo`` and ``ProcessGroupNCCL`` are c10d ``Backend``
    objects, not ``ProcessGroup`` ones; they have these methods, which torch's stubs of ``Backend`` lack."""

    def allreduce(self, tensors: list[Tensor]) -> dist.Work: ...

    def broadcast(self, tensors: list[Tensor], opts: dist.BroadcastOptions) -> dist.Work: ...

    def size(self) -> int: ...

    def abort(self) -> None: ...


def _process_group(
    store: dist.Store, rank: int, size: int, timeout: float, backend: str, host: str | None = None
) -> _Group:
    group: dist.ProcessGroupNCCL | dist.ProcessGroupGloo
    if backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timedelta(seconds=timeout)
        group = dist.ProcessGroupNCCL(store, rank, size, opts)
    elif host is None:
        group = dist.ProcessGroupGloo(store, rank, size, timedelta(seconds=timeout))
    else:
        # gloo's pairs listen on this rank's own interface only; torch's stubs lack _Options (their Options is,
        # at run time, Backend.Options, without _devices)
        gloo = dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]
        gloo._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        gloo._timeout = timedelta(seconds=timeout)
        group = dist.ProcessGroupGloo(store, rank, size, gloo)
    return cast(_Group, group)  # see _Group


class GradientSharing:
    """One rank's view of the generator shared by ``world`` ranks.

    Arguments:
        store: a torch.distributed store every rank reaches (rank 0 hosts it).
        rank: this rank, ``0 <= rank < world``.
        world: the number of ranks.
        schedule: ``sync`` or ``grouped`` sharing.
        timeout: seconds a collective may wait for a peer before it raises (a lost rank then stops
            its peers instead of hanging them).
        device: where this rank's generator lives; the collectives run there (gloo on the CPU, NCCL
            on CUDA, one GPU per rank).
        host: the address of this rank's interface, where gloo listens for its peers (default: gloo's
            choice, the address of the machine's host name).
    """

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        world: int,
        schedule: ShareSchedule = ShareSchedule(),
        timeout: float = 60.0,
        device: torch.device | str = "cpu",
        host: str | None = None,
    ) -> None:
        if schedule.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule.kind!r}; choose one of {', '.join(SCHEDULES)}")
        self.rank, self.world, self.schedule = rank, world, schedule
        self.comm_seconds = 0.0  # wall time spent in collectives (the communication cost)
        self.device = torch.device(device)
        backend = backend_for(self.device)
        self.world_group = _process_group(dist.PrefixStore("world", store), rank, world, timeout, backend, host)
        self.group = self.leaders = None
        if schedule.kind == "grouped":
            gs = schedule.group_size
            g, r = divmod(rank, gs)
            self.is_leader = r == 0
            if gs > 1:
                self.group = _process_group(dist.PrefixStore(f"group-{g}", store), r, gs, timeout, backend, host)
            n_groups = world // gs
            if self.is_leader and n_groups > 1:
                self.leaders = _process_group(dist.PrefixStore("leaders", store), g, n_groups, timeout, backend, host)

    # --- collectives on flat copies of parameter lists -----------------------------------------

    def _timed(self, work: dist.Work) -> None:
        t0 = time.perf_counter()
        work.wait()
        self.comm_seconds += time.perf_counter() - t0

    def _allreduce_mean(self, group: _Group, tensors: list[Tensor]) -> None:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self._timed(group.allreduce([flat]))
        flat /= group.size()
        self._unflatten(flat, tensors)

    def _broadcast(self, group: _Group, tensors: list[Tensor], root: int) -> None:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        opts = dist.BroadcastOptions()
        opts.rootRank = root
        self._timed(group.broadcast([flat], opts))
        self._unflatten(flat, tensors)

    @staticmethod
    def _unflatten(flat: Tensor, tensors: list[Tensor]) -> None:
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    # --- what the trainer calls ----------------------------------------------------------------

    @torch.no_grad()
    def broadcast_parameters(self, params: Iterable[Tensor]) -> None:
        """Give every rank rank 0's generator weights (once, before the first step)."""
        self._broadcast(self.world_group, list(params), root=0)

    @torch.no_grad()
    def average_gradients(self, params: Iterable[Tensor]) -> None:
        """Average the generator's gradients over the ranks that share every step."""
        group = self.world_group if self.schedule.kind == "sync" else self.group
        if group is None:
            return
        params = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        self._allreduce_mean(group, grads)
        for p, g in zip(params, grads):
            p.grad = g

    @torch.no_grad()
    def after_step(self, step: int, params: Iterable[Tensor]) -> None:
        """Grouped schedule: every ``sync_every`` steps the leaders average weights and pass them on."""
        if self.schedule.kind != "grouped" or step % self.schedule.sync_every != 0:
            return
        params = list(params)
        if self.leaders is not None:
            self._allreduce_mean(self.leaders, params)
        if self.group is not None:
            self._broadcast(self.group, params, root=0)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (so that all ranks stop at the same step)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self._timed(self.world_group.allreduce([t]))
        return bool(t.item() > 0)

    def close(self) -> None:
        """Tear the groups down; peers blocked in a collective with this rank get an error at once."""
        for group in (self.leaders, self.group, self.world_group):
            if group is not None:
                try:
                    group.abort()
                except Exception:  # noqa: BLE001 (already broken: nothing left to release)
                    pass
