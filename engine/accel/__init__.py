"""The speed machinery of GAN training, behind :class:`qcf_studio.engine.gan.accelerator.Accelerator`.

- :mod:`~qcf_studio.engine.accel.handpass`: the discriminator's forward and backward pass by hand, both losses from
  one pass (the same gradients as :mod:`qcf_studio.engine.gan.judging`'s autograd);
- :mod:`~qcf_studio.engine.accel.blocks`: one block of rows of that pass, in Python, TorchScript or C++
  (:mod:`~qcf_studio.engine.accel.native`), bit-identical;
- :mod:`~qcf_studio.engine.accel.threads`: the pass's blocks on helper threads while the caller generates events;
- :mod:`~qcf_studio.engine.accel.optim`: Adam's fused kernel called directly, bit-identical to ``step()``;
- :mod:`~qcf_studio.engine.accel.malloc`: the process keeps freed heap memory (no page faults per temporary).

:class:`Accelerated` puts them together for one trainer. Delete this folder (or set ``QCF_ACCEL=0``) and
training runs the plain path of :mod:`qcf_studio.engine.gan.accelerator`, slower; ``tests/test_accel.py`` pins each
speed-up to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future

import torch
from torch import Tensor, nn

from qcf_studio.engine.accel.blocks import pass_block_kind
from qcf_studio.engine.accel.handpass import (
    AdversarialPass,
    mean_over_networks,
    network_rows,
    networks_pass,
    rows_of,
    split_pass,
)
from qcf_studio.engine.accel.optim import adam_step
from qcf_studio.engine.accel.threads import PassThreads, PendingPass
from qcf_studio.engine.gan.judging import Judgement
from qcf_studio.engine.gan.models import Discriminator

__all__ = ["Accelerated", "pass_block_kind"]

RealBatch = tuple[Tensor, Tensor | None]


def _judgement(ev: AdversarialPass, fake: Tensor, weights: Tensor | None) -> Judgement:
    """The pass as a :class:`~qcf_studio.engine.gan.judging.Judgement`: a generator loss whose value is the pass's and
    whose gradient w.r.t. the generated rows (and their weights) is the one the pass computed."""
    surrogate = (fake * ev.grad_inputs).sum()
    if weights is not None and ev.grad_weights is not None:
        surrogate = surrogate + (weights * ev.grad_weights).sum()
    return Judgement(ev.loss_d, ev.loss_g + (surrogate - surrogate.detach()), ev.logits)


class Accelerated:
    """The hand-written pass (on helper threads on a CPU with more than one torch thread), Adam's fused
    kernel, and a step on one torch thread per thread of Python while helpers run.

    With helpers, a step's measured-event blocks start before the generator runs, and the next step's
    batch is drawn by a helper and its blocks begun on the updated discriminator while the generator
    backpropagates. The numbers are those of the pass on one thread (:mod:`qcf_studio.engine.accel.threads`).
    """

    def __init__(
        self,
        discriminator: Discriminator,
        draw_real: Callable[[], RealBatch],
        real_rng: torch.Generator,
        device: torch.device,
        pass_threads: bool | None = None,
    ) -> None:
        self.discriminator, self.draw_real, self.real_rng = discriminator, draw_real, real_rng
        threads = torch.get_num_threads()
        cpu = torch.device(device).type == "cpu"
        if pass_threads is None:
            pass_threads = cpu and threads > 1 and PassThreads.available()
        elif pass_threads and (not cpu or threads < 2 or not PassThreads.available()):
            raise ValueError(
                f"pass_threads needs the CPU, more than one torch thread and a compiled pass block "
                f"(device {device}, {threads} threads)"
            )
        self.pass_threads = PassThreads(threads - 1) if pass_threads else None
        self.helpers = self.pass_threads.helpers if self.pass_threads is not None else 0
        self.torch_threads = threads
        block = pass_block_kind() if cpu else "python"
        self.name = f"accel ({block} pass block, {self.helpers} helper thread{'s' * (self.helpers != 1)})"
        # one scratch workspace per network, reused between steps
        self._workspaces: list[dict[str, Tensor]] = [{} for _ in discriminator.networks]
        self._real: RealBatch | None = None  # this step's batch (without helpers)
        self._pending: PendingPass | None = None  # this step's pass, real blocks under way
        self._prefetched: PendingPass | None = None  # the next step's pass, real blocks under way
        self._next_batch: Future[RealBatch] | None = None
        self._more = False
        self._rng_before_prefetch: Tensor | None = None

    def optimizer(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        # fused: one kernel updates all tensors (the per-tensor loop costs more than the arithmetic here)
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)

    def optimizer_step(self, opt: torch.optim.Optimizer) -> None:
        adam_step(opt)

    @contextlib.contextmanager
    def _one_thread(self) -> Iterator[None]:
        torch.set_num_threads(1)  # one torch thread here, one on each helper
        try:
            yield
        finally:
            torch.set_num_threads(self.torch_threads)

    def step(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.pass_threads is None else self._one_thread()

    def _begin_pass(self, real: Tensor, real_weights: Tensor | None) -> PendingPass:
        assert self.pass_threads is not None
        nets = self.discriminator.networks
        r, _ = network_rows(nets, real.shape[0], 0)
        return self.pass_threads.begin(
            nets,
            [rows_of(real, k, r) for k in range(len(nets))],
            [rows_of(real_weights, k, r) for k in range(len(nets))],
        )

    def begin(self, more: bool) -> None:
        self._more = more
        self._pending, self._prefetched = self._prefetched, None
        if self._pending is None:
            real, real_weights = self.draw_real()
            if self.pass_threads is not None:  # the real rows' blocks run while the generator works
                self._pending = self._begin_pass(real, real_weights)
            else:
                self._real = (real, real_weights)

    def judge_events(self, fake: Tensor, weights: Tensor | None) -> Judgement:
        rows, w = fake.detach(), None if weights is None else weights.detach()
        nets = self.discriminator.networks
        pending, self._pending = self._pending, None
        if pending is not None:
            assert self.pass_threads is not None
            if self._more:  # the next real batch, drawn by a helper once it runs out of blocks
                self._rng_before_prefetch = self.real_rng.get_state()
                self._next_batch = self.pass_threads.submit(self.draw_real)
            _, g = network_rows(nets, 0, rows.shape[0])
            n = len(nets)
            passes = pending.finish(
                [rows_of(rows, k, g) for k in range(n)], [rows_of(w, k, g) for k in range(n)], self._workspaces[0]
            )
            ev = mean_over_networks(nets, passes)
        else:
            assert self._real is not None, "judge_events before begin"
            (real, real_weights), self._real = self._real, None
            ev = networks_pass(nets, real, rows, w, real_weights, self._workspaces)
        return _judgement(ev, fake, weights)

    def judge(self, net: nn.Sequential, real: Tensor, fake: Tensor) -> Judgement:
        return _judgement(split_pass(net, real.detach(), fake.detach()), fake, None)

    def discriminator_updated(self) -> None:
        # with helpers, the next step's real blocks run on the updated discriminator while the generator
        # backpropagates
        if self._next_batch is not None:
            batch, self._next_batch = self._next_batch.result(), None
            self._prefetched = self._begin_pass(*batch)

    def real_rng_state(self) -> Tensor:
        if self._prefetched is not None and self._rng_before_prefetch is not None:
            return self._rng_before_prefetch
        return self.real_rng.get_state()

    def discard(self) -> None:
        self._prefetched = None
