"""The discriminator's hand-written pass on helper threads, while the calling thread generates events.

The pass works on blocks of rows, each block either all real or all generated, and each block's weight
gradients go to a slot of their own that is summed in block order at the end: the result is the same
whichever thread ran which block. :class:`PassThreads` uses that to run the blocks on helper threads
while the calling thread generates the events the later blocks need (the real rows' blocks need nothing
from the generator): :meth:`PassThreads.begin` starts the real blocks, :meth:`PendingPass.finish` adds
the generated rows and joins in. The block function runs without holding Python's global interpreter
lock (:func:`~qcf_studio.engine.accel.blocks.fast_block`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import Tensor, nn

from qcf_studio.engine.accel import handpass
from qcf_studio.engine.accel.blocks import fast_block
from qcf_studio.engine.accel.handpass import AdversarialPass, NetPass

T = TypeVar("T")

__all__ = ["PassThreads", "PendingPass"]


class PassThreads:
    """Helper threads that run discriminator blocks while the calling thread generates events.

    Each helper and the caller run torch with one thread of their own (the caller must set
    ``torch.set_num_threads(1)`` for the duration, see :meth:`~qcf_studio.engine.gan.trainer.GANTrainer.train_step`),
    and take blocks from one queue: the real rows' blocks first, then the generated rows' ones once
    :meth:`PendingPass.finish` supplies them. Results are bit-identical to a pass on the calling
    thread alone with the same blocks.

    Arguments:
        helpers: helper threads (a trainer with ``T`` torch threads uses ``T − 1``).
    """

    def __init__(self, helpers: int) -> None:
        if helpers < 1:
            raise ValueError(f"PassThreads needs at least one helper thread, got {helpers}")
        self.helpers = helpers
        self._pool = ThreadPoolExecutor(
            helpers, thread_name_prefix="qcf-pass", initializer=torch.set_num_threads, initargs=(1,)
        )
        self._workspaces = threading.local()

    @staticmethod
    def available() -> bool:
        """Whether a block function that runs without the interpreter lock is at hand (the native block
        or the TorchScript one); without one, helpers would wait on the lock more than they help."""
        return fast_block() is not None

    def begin(
        self,
        nets: Sequence[nn.Sequential],
        real: Sequence[Tensor],
        real_weights: Sequence[Tensor | None],
        block_rows: int | None = None,
    ) -> PendingPass:
        """Start the real rows' blocks of each network's pass on the helpers (``real[i]`` for ``nets[i]``;
        blocks of :data:`~qcf_studio.engine.accel.handpass.PASS_BLOCK_ROWS_PER_THREAD` rows by default, as one thread's
        pass)."""
        rows = block_rows or handpass.PASS_BLOCK_ROWS_PER_THREAD
        return PendingPass(self, [NetPass(n, r, w, rows) for n, r, w in zip(nets, real, real_weights)])

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run ``fn(*args)`` on a helper once it is free: after the blocks queued so far, which a helper
        takes until none are left, i.e. when it would otherwise wait for the next pass."""
        return self._pool.submit(fn, *args)

    def _workspace(self) -> dict[str, Tensor]:
        ws = getattr(self._workspaces, "ws", None)
        if ws is None:
            ws = self._workspaces.ws = {}
        return ws

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class PendingPass:
    """A pass whose real blocks are under way (:meth:`PassThreads.begin`); :meth:`finish` completes it.

    Helpers take blocks from a shared queue until it is empty and never wait for more: a pass that is
    never finished leaves no thread behind.
    """

    def __init__(self, threads: PassThreads, parts: list[NetPass]) -> None:
        self._threads, self.parts = threads, parts
        self._lock = threading.Lock()
        self._queue = [(i, b) for i, p in enumerate(parts) for b in range(len(p.blocks))]  # real blocks so far
        self._next = 0
        block = fast_block()
        assert block is not None, "PassThreads.begin without a compiled block (check PassThreads.available())"
        self._block = block
        self._futures: list[Future[None]] = []
        self._start_helpers()

    def _start_helpers(self) -> None:
        ws = self._threads._workspace
        self._futures += [self._threads._pool.submit(self._work, ws) for _ in range(self._threads.helpers)]

    def _claim(self) -> tuple[int, int] | None:
        with self._lock:
            if self._next == len(self._queue):
                return None
            self._next += 1
            return self._queue[self._next - 1]

    def _work(self, workspace: Callable[[], dict[str, Tensor]]) -> None:
        ws = workspace()
        while (job := self._claim()) is not None:
            i, b = job
            self.parts[i].run(b, ws, self._block, 1)

    @torch.no_grad()
    def finish(
        self, fake: Sequence[Tensor], weights: Sequence[Tensor | None], workspace: dict[str, Tensor]
    ) -> list[AdversarialPass]:
        """Add each network's generated rows, run blocks alongside the helpers until none are left,
        and return each network's :class:`AdversarialPass` (``.grad`` set as by :func:`adversarial_pass`)."""
        with self._lock:
            for i, (p, f, w) in enumerate(zip(self.parts, fake, weights)):
                n_real_blocks = len(p.blocks)
                p.add_generated(f, w)
                self._queue += [(i, b) for b in range(n_real_blocks, len(p.blocks))]
        self._start_helpers()  # (helpers still on the real blocks go on with these)
        try:
            self._work(lambda: workspace)
        finally:
            for fut in self._futures:
                # A helper call still queued (behind other work, e.g. the next real batch) has no block
                # to finish: the queue is empty now. Cancelled, it costs no wait for that other work.
                if not fut.cancel():
                    fut.result()
        return [p.result() for p in self.parts]
