"""The discriminator's forward and backward pass by hand, block by block, optionally on helper threads.

Training does not run the event discriminator through autograd: :func:`adversarial_pass` sends
real and generated events through it once and backpropagates by hand (see there for why that is
exact; on 2 CPU cores it takes about half the time of the autograd D and G steps).

The pass works on blocks of rows, each block either all real or all generated, and each block's
weight gradients go to a slot of their own that is summed in block order at the end: the result is
the same whichever thread ran which block. :class:`PassThreads` uses that to run the blocks on helper
threads while the calling thread generates the events the later blocks need (the real rows' blocks
need nothing from the generator): :meth:`PassThreads.begin` starts the real blocks,
:meth:`PendingPass.finish` adds the generated rows and joins in. The block function runs without
holding Python's global interpreter lock: in C++ (:mod:`engine.native`, built on first use, the same
numbers) or, where that cannot be built, compiled with TorchScript; run as plain Python, two threads'
passes took 25-35% longer each than in separate processes.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from engine.native import pass_block as native_pass_block

T = TypeVar("T")

__all__ = [
    "AdversarialPass",
    "adversarial_pass",
    "split_pass",
    "PassThreads",
    "PendingPass",
    "PASS_BLOCK_ROWS_PER_THREAD",
    "pass_block_kind",
]

# Rows of events per block, per torch thread: few enough that a block's activations (rows × width
# floats) stay in cache from the forward to the backward half, enough that per-operation overhead
# stays small. On AMD EPYC cores (1 MiB L2 each, 32 MiB L3), full proxy2d steps of 20 000 rows:
# with 1 thread 4096 rows 2-7% faster than 8192 and 3072; with 2 threads 8192 4-5% faster than 4096.
PASS_BLOCK_ROWS_PER_THREAD = 4096
# Batches the rows of a block are split into for its weight gradients (see _weight_grad).
WEIGHT_GRAD_SPLIT = 4


@dataclass
class AdversarialPass:
    """What one :func:`adversarial_pass` computes (all without autograd history).

    Attributes:
        logits: ``(N,)``, real rows first.
        loss_d: the discriminator loss ``BCE(real, 1) + BCE(generated, 0)`` (means; weighted mean
            for the generated rows when they carry weights, mean of weight × BCE for weighted real
            rows): ln 4 at equilibrium.
        loss_g: the generator's non-saturating loss ``BCE(generated, 1)``.
        grad_inputs: ``∂ loss_g / ∂ input`` of the generated rows, ``(N − n_real, F)``.
        grad_weights: ``∂ loss_g / ∂ weight`` of the generated rows, ``(N − n_real,)``, if weighted.
    """

    logits: Tensor
    loss_d: Tensor
    loss_g: Tensor
    grad_inputs: Tensor
    grad_weights: Tensor | None = None


# ---------------------------------------------------------------------------------------------
# One block (TorchScript-compatible: also compiled by _compiled_block)


def _scratch(ws: dict[str, Tensor], name: str, rows: int, cols: int, like: Tensor) -> Tensor:
    """A ``(rows, cols)`` buffer from the workspace ``ws``, made (or grown) on first use."""
    if name in ws:
        buf = ws[name]
        if buf.shape[0] >= rows and buf.shape[1] == cols and buf.dtype == like.dtype and buf.device == like.device:
            return buf[:rows]
    buf = like.new_empty([rows, cols])
    ws[name] = buf
    return buf


def _weight_grad(out: Tensor, scaled: Tensor, delta: Tensor, split: int) -> None:
    """``out = scaled.T @ delta`` for a block's ``scaled (m, in + 1)`` and ``delta (m, out)``.

    A long reduction into a small matrix: the rows are split into ``split`` batches of one product
    each, summed afterwards, which keeps every core busy (the library's own threading of the single
    product left the 3-row one of the first layer on one core; measured 110 against 185 µs per 8192
    rows for it and 500 against 550 µs for a 64-wide layer, 2 threads).
    """
    m = scaled.shape[0]
    if split < 2 or m % split != 0:
        torch.mm(scaled.t(), delta, out=out)
        return
    parts = torch.bmm(scaled.view(split, m // split, -1).transpose(1, 2), delta.view(split, m // split, -1))
    torch.sum(parts, 0, out=out)


def _pass_block(
    weights: list[Tensor],
    biases: list[Tensor],
    slopes: list[float],
    w_out: Tensor,
    b_out: Tensor,
    w_in_t: Tensor,
    rows: Tensor,
    row_weights: Tensor,
    target: float,
    grads: list[Tensor],
    logits: Tensor,
    grad_inputs: Tensor | None,
    ws: dict[str, Tensor],
    split: int,
) -> None:
    """Forward and backward of one block of rows, all real (``target`` 1) or all generated (0).

    Writes the block's ``logits (m,)``, its weight gradients ``grads[k] (in + 1, out)`` of each
    layer (weights transposed, the bias as the last row: ``x.T @ delta`` is a fast product when
    ``x`` is skinny, ``delta.T @ x`` is not), and for generated rows ``grad_inputs (m, F)``.
    ``row_weights`` is each row's weight in its loss (1 / rows for a mean); ``w_in_t`` the first
    layer's weight transposed (contiguous).
    """
    m = rows.shape[0]
    n_hidden = len(weights)
    acts: list[Tensor] = [rows]  # inputs, then each hidden layer's output
    for k in range(n_hidden):
        out = _scratch(ws, "act" + str(k), m, weights[k].shape[0], rows)
        z = torch.addmm(biases[k], acts[-1], weights[k].t(), out=out)
        acts.append(F.leaky_relu_(z, slopes[k]))
    logit = torch.addmv(b_out, acts[-1], w_out, out=logits)
    # ∂ loss_d / ∂ logit per row: (sigmoid(l) − target) × the row's weight in its mean.
    g_d = torch.sigmoid(logit).sub_(target).mul_(row_weights)
    last = grads[n_hidden]
    torch.mv(acts[-1].t(), g_d, out=last[:-1, 0])
    last[-1, 0] = g_d.sum()
    # Backward of a unit logit gradient (delta = ∂ logit / ∂ pre-activation). The weight gradients
    # scale each row's delta by its g_d: they are [g_d x, g_d].T @ delta for a layer with input x
    # (the bias's input is 1). LeakyReLU's derivative is read off its output.
    delta = w_out.expand(m, -1)
    for k in range(n_hidden - 1, -1, -1):
        # into a buffer of its own: written over its input, the result went through a temporary and a copy
        delta = torch.ops.aten.leaky_relu_backward(
            delta, acts[k + 1], slopes[k], True, grad_input=_scratch(ws, "back" + str(k), m, acts[k + 1].shape[1], rows)
        )
        width = acts[k].shape[1]
        scaled = _scratch(ws, "scaled" + str(width), m, width + 1, rows)
        torch.mul(acts[k], g_d[:, None], out=scaled[:, :width])
        scaled[:, width] = g_d
        _weight_grad(grads[k], scaled, delta, split)
        if k > 0:
            delta = torch.mm(delta, weights[k], out=_scratch(ws, "delta" + str(width), m, width, rows))
    if grad_inputs is not None:  # ∂ loss_g / ∂ input of generated rows: unit deltas × ∂ loss_g / ∂ logit
        unit = delta if n_hidden == 0 else torch.mm(w_in_t, delta.t()).t()  # delta @ W is 4× slower
        g_g = torch.sigmoid(-logit).mul_(row_weights).neg_()
        torch.mul(unit, g_g[:, None], out=grad_inputs)


@functools.cache
def _compiled_block() -> Callable[..., None] | None:
    """:func:`_pass_block` compiled with TorchScript (``None`` where that fails): it runs without
    Python's global interpreter lock, so helper threads and the calling thread do not wait on each
    other. TorchScript is deprecated in torch 2.x but still shipped; it is only used where the native
    block cannot be built."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(_pass_block)
    except Exception as err:  # noqa: BLE001 - any failure means: run the blocks as Python
        warnings.warn(
            f"the discriminator pass runs without helper threads: TorchScript failed ({err})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


@functools.cache
def _fast_block() -> Callable[..., None] | None:
    """The fastest block function that runs without the interpreter lock: the native block
    (:func:`engine.native.pass_block`, the same numbers as :func:`_pass_block`) for float32 rows, with
    the TorchScript one for other rows; or the TorchScript one alone; ``None`` if neither builds.

    A proxy2d pass (20 000 rows, 2→64→64→1) on one thread: 8.1-8.6 ms with the native block, 11.2-12.4
    with the TorchScript one, 9.5-10.1 in Python: the same products, without the per-operation overhead
    of some fifty dispatched operations per block, and LeakyReLU, its derivative and the scaled rows as
    single loops.
    """
    native = native_pass_block()
    if native is None:
        return _compiled_block()

    def block(
        weights: list[Tensor],
        biases: list[Tensor],
        slopes: list[float],
        w_out: Tensor,
        b_out: Tensor,
        w_in_t: Tensor,
        rows: Tensor,
        row_weights: Tensor,
        target: float,
        grads: list[Tensor],
        logits: Tensor,
        grad_inputs: Tensor | None,
        ws: dict[str, Tensor],
        split: int,
    ) -> None:
        if rows.dtype != torch.float32 or rows.device.type != "cpu" or split > 1 or not rows.is_contiguous():
            other = _compiled_block() or _pass_block
            other(
                weights,
                biases,
                slopes,
                w_out,
                b_out,
                w_in_t,
                rows,
                row_weights,
                target,
                grads,
                logits,
                grad_inputs,
                ws,
                split,
            )
            return
        native(weights, biases, slopes, w_out, b_out, w_in_t, rows, row_weights, target, grads, logits, grad_inputs)

    return block


def pass_block_kind() -> str:
    """How one-thread and helper-thread passes run their float32 blocks: ``"native"``, ``"torchscript"``
    or ``"python"``."""
    if native_pass_block() is not None:
        return "native"
    return "torchscript" if _compiled_block() is not None else "python"


# ---------------------------------------------------------------------------------------------
# A pass over many blocks


class _NetPass:
    """One network's part of a pass: its layers, rows, blocks and per-block gradient slots."""

    def __init__(self, net: nn.Sequential, real: Tensor, real_weights: Tensor | None, block_rows: int) -> None:
        linears = [m for m in net if isinstance(m, nn.Linear)]
        slopes = [m.negative_slope for m in net if isinstance(m, nn.LeakyReLU)]
        if len(slopes) != len(linears) - 1 or linears[-1].out_features != 1 or any(s <= 0 for s in slopes):
            raise ValueError("adversarial_pass needs Linear layers with LeakyReLU (slope > 0) between them, one output")
        self.linears, self.slopes, self.block_rows = linears, [float(s) for s in slopes], block_rows
        hidden = linears[:-1]
        self.weights = [m.weight.detach() for m in hidden]
        self.biases = [m.bias.detach() for m in hidden]
        self.w_out, self.b_out = linears[-1].weight.detach()[0], linears[-1].bias.detach()
        self.w_in_t = linears[0].weight.detach().t().contiguous()
        self.real, self.n_real = real, real.shape[0]
        self.real_row_weights = real.new_full((self.n_real,), 1.0 / max(self.n_real, 1))
        if real_weights is not None:
            self.real_row_weights = real_weights * (1.0 / max(self.n_real, 1))
        self.real_weights = real_weights
        self.blocks: list[tuple[bool, int, int]] = _split(self.n_real, block_rows, generated=False)
        # per-block gradient slots and the logits, real rows' now, generated rows' with add_generated
        self.slots = [[real.new_empty(len(self.blocks), m.in_features + 1, m.out_features) for m in linears]]
        self.logits = [real.new_empty(self.n_real)]
        self.fake: Tensor | None = None

    def add_generated(self, fake: Tensor, weights: Tensor | None) -> None:
        n_fake = fake.shape[0]
        self.fake, self.weights_fake = fake, weights
        self.fake_row_weights = (
            fake.new_full((n_fake,), 1.0 / max(n_fake, 1)) if weights is None else weights / weights.sum()
        )
        blocks = _split(n_fake, self.block_rows, generated=True)
        self.blocks += blocks
        self.slots.append([fake.new_empty(len(blocks), m.in_features + 1, m.out_features) for m in self.linears])
        self.logits.append(fake.new_empty(n_fake))
        self.grad_inputs = fake.new_empty(n_fake, fake.shape[1])

    def run(self, b: int, ws: dict[str, Tensor], block: Callable[..., None], split: int) -> None:
        """Block ``b`` (its gradients into slot ``b``)."""
        generated, start, stop = self.blocks[b]
        rows = self.fake if generated else self.real
        assert rows is not None
        row_weights = self.fake_row_weights if generated else self.real_row_weights
        slots = self.slots[int(generated)]
        slot = b - len(self.slots[0][0]) if generated else b
        block(
            self.weights,
            self.biases,
            self.slopes,
            self.w_out,
            self.b_out,
            self.w_in_t,
            rows[start:stop],
            row_weights[start:stop],
            0.0 if generated else 1.0,
            [s[slot] for s in slots],
            self.logits[int(generated)][start:stop],
            self.grad_inputs[start:stop] if generated else None,
            ws,
            split,
        )

    def result(self) -> AdversarialPass:
        """Sets the networks' ``.grad`` (slots summed in block order) and returns the losses."""
        for lin, real, fake in zip(self.linears, *self.slots):
            g = torch.cat([real, fake]).sum(0)
            lin.weight.grad, lin.bias.grad = g[:-1].t().contiguous(), g[-1].clone()
        l_real, l_fake = self.logits
        w_fake = self.fake_row_weights
        loss_g_rows = F.softplus(-l_fake)
        loss_g = (loss_g_rows * w_fake).sum()
        real_terms = F.softplus(-l_real) if self.real_weights is None else F.softplus(-l_real) * self.real_weights
        loss_d = real_terms.mean() + (F.softplus(l_fake) * w_fake).sum()
        w = self.weights_fake
        grad_weights = None if w is None else (loss_g_rows - loss_g) / w.sum()
        return AdversarialPass(torch.cat(self.logits), loss_d, loss_g, self.grad_inputs, grad_weights)


def _split(n: int, block_rows: int, generated: bool) -> list[tuple[bool, int, int]]:
    """``n`` rows as ``ceil(n / block_rows)`` blocks of (nearly) equal size; the generated rows' last
    block in two halves, so that threads sharing them finish closer together (the caller waited
    0.4 ms per proxy2d step at the median, 0.8 on average, with whole blocks)."""
    count = max(1, math.ceil(n / block_rows)) if n else 0
    edges = [round(i * n / count) for i in range(count + 1)]
    if generated and count and edges[-1] - edges[-2] > 1:
        edges.insert(-1, (edges[-2] + edges[-1]) // 2)
    return [(generated, a, b) for a, b in zip(edges[:-1], edges[1:])]


@torch.no_grad()
def adversarial_pass(
    net: nn.Sequential,
    inputs: Tensor,
    n_real: int,
    weights: Tensor | None = None,
    block_rows: int | None = None,
    workspace: dict[str, Tensor] | None = None,
    real_weights: Tensor | None = None,
) -> AdversarialPass:
    """Both GAN losses of an :func:`~engine.models.mlp` discriminator from one forward and one backward pass.

    Sets the ``.grad`` of every parameter of ``net`` to ``∂ loss_d / ∂ parameter`` and returns the
    losses, the logits and the generator's gradient w.r.t. the generated inputs (to be chained
    into the generator's autograd graph by the caller). The generator's gradient is that of the
    discriminator as passed in, i.e. before its update (simultaneous rather than alternating
    updates).

    Why by hand: ``∂ loss / ∂ logit`` is a scalar per event, so one backward pass of a unit
    gradient gives every event's deltas; the discriminator's weight gradients are those deltas
    scaled by ``∂ loss_d / ∂ logit`` and the generator's input gradients the same deltas scaled by
    ``∂ loss_g / ∂ logit``. Real and generated events share the pass, there is no second forward
    for the generator and no autograd bookkeeping. The pass runs over blocks of rows whose
    activations stay in cache, in place in a reused workspace: fresh multi-megabyte tensors each
    step would cost more in page faults than the arithmetic.

    Arguments:
        net: ``Linear`` layers with ``LeakyReLU`` between them (from :func:`~engine.models.mlp`), one output.
        inputs: ``(N, F)``: ``n_real`` rows of real events, then the generated ones.
        n_real: rows of real events.
        weights: optional per-event weights of the generated rows ``(N − n_real,)`` (e.g. detector
            efficiencies); their losses are then weighted means.
        real_weights: optional per-event weights of the real rows ``(n_real,)``, normalised to mean 1
            over the measured data (not over the batch): the real term is then the mean of
            ``weight × BCE(real, 1)``, an unbiased estimate of the weighted data's expectation. Weights of
            exactly 1 give bit-identical results to ``None``.
        block_rows: rows per block (default: :data:`PASS_BLOCK_ROWS_PER_THREAD` per torch thread).
        workspace: scratch tensors kept between calls (filled on first use); one per network, not
            shared between threads.
    """
    return split_pass(net, inputs[:n_real], inputs[n_real:], weights, real_weights, block_rows, workspace)


@torch.no_grad()
def split_pass(
    net: nn.Sequential,
    real: Tensor,
    fake: Tensor,
    weights: Tensor | None = None,
    real_weights: Tensor | None = None,
    block_rows: int | None = None,
    workspace: dict[str, Tensor] | None = None,
) -> AdversarialPass:
    """:func:`adversarial_pass` with the real and the generated rows as two tensors (no copy into one)."""
    rows = block_rows or PASS_BLOCK_ROWS_PER_THREAD * torch.get_num_threads()
    part = _NetPass(net, real, real_weights, rows)
    part.add_generated(fake, weights)
    ws = {} if workspace is None else workspace
    split = WEIGHT_GRAD_SPLIT if torch.get_num_threads() > 1 else 1
    block = (_fast_block() if split == 1 and real.device.type == "cpu" else None) or _pass_block
    for b in range(len(part.blocks)):
        part.run(b, ws, block, split)
    return part.result()


# ---------------------------------------------------------------------------------------------
# The same pass on helper threads


class PassThreads:
    """Helper threads that run discriminator blocks while the calling thread generates events.

    Each helper and the caller run torch with one thread of their own (the caller must set
    ``torch.set_num_threads(1)`` for the duration, see :meth:`~engine.training.GANTrainer.train_step`),
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
        return _fast_block() is not None

    def begin(
        self,
        nets: Sequence[nn.Sequential],
        real: Sequence[Tensor],
        real_weights: Sequence[Tensor | None],
        block_rows: int | None = None,
    ) -> PendingPass:
        """Start the real rows' blocks of each network's pass on the helpers (``real[i]`` for ``nets[i]``;
        blocks of :data:`PASS_BLOCK_ROWS_PER_THREAD` rows by default, as one thread's pass)."""
        rows = block_rows or PASS_BLOCK_ROWS_PER_THREAD
        return PendingPass(self, [_NetPass(n, r, w, rows) for n, r, w in zip(nets, real, real_weights)])

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

    def __init__(self, threads: PassThreads, parts: list[_NetPass]) -> None:
        self._threads, self.parts = threads, parts
        self._lock = threading.Lock()
        self._queue = [(i, b) for i, p in enumerate(parts) for b in range(len(p.blocks))]  # real blocks so far
        self._next = 0
        block = _fast_block()
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
