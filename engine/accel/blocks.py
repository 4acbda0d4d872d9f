"""One block of the discriminator's hand-written pass: forward and backward of a block of rows.

:func:`pass_block` is the reference, in Python; :func:`fast_block` picks the fastest version of it that
runs without Python's global interpreter lock (the C++ one of :mod:`qcf_studio.engine.accel.native`, the same
numbers, or the TorchScript-compiled one), which the helper threads of :mod:`qcf_studio.engine.accel.threads` need.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from qcf_studio.engine.accel.native import pass_block as native_block

__all__ = ["pass_block", "fast_block", "compiled_block", "pass_block_kind", "scratch", "WEIGHT_GRAD_SPLIT"]

# Batches the rows of a block are split into for its weight gradients (see _weight_grad).
WEIGHT_GRAD_SPLIT = 4


def scratch(ws: dict[str, Tensor], name: str, rows: int, cols: int, like: Tensor) -> Tensor:
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
    product left the 3-row one of the first layer on one core).
    """
    m = scaled.shape[0]
    if split < 2 or m % split != 0:
        torch.mm(scaled.t(), delta, out=out)
        return
    parts = torch.bmm(scaled.view(split, m // split, -1).transpose(1, 2), delta.view(split, m // split, -1))
    torch.sum(parts, 0, out=out)


def pass_block(
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
        out = scratch(ws, "act" + str(k), m, weights[k].shape[0], rows)
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
            delta, acts[k + 1], slopes[k], True, grad_input=scratch(ws, "back" + str(k), m, acts[k + 1].shape[1], rows)
        )
        width = acts[k].shape[1]
        scaled = scratch(ws, "scaled" + str(width), m, width + 1, rows)
        torch.mul(acts[k], g_d[:, None], out=scaled[:, :width])
        scaled[:, width] = g_d
        _weight_grad(grads[k], scaled, delta, split)
        if k > 0:
            delta = torch.mm(delta, weights[k], out=scratch(ws, "delta" + str(width), m, width, rows))
    if grad_inputs is not None:  # ∂ loss_g / ∂ input of generated rows: unit deltas × ∂ loss_g / ∂ logit
        unit = delta if n_hidden == 0 else torch.mm(w_in_t, delta.t()).t()  # (faster than delta @ W)
        g_g = torch.sigmoid(-logit).mul_(row_weights).neg_()
        torch.mul(unit, g_g[:, None], out=grad_inputs)


@functools.cache
def compiled_block() -> Callable[..., None] | None:
    """:func:`pass_block` compiled with TorchScript (``None`` where that fails): it runs without
    Python's global interpreter lock, so helper threads and the calling thread do not wait on each
    other. TorchScript is deprecated in torch 2.x but still shipped; it is only used where the native
    block cannot be built."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(pass_block)
    except Exception as err:  # noqa: BLE001 - any failure means: run the blocks as Python
        warnings.warn(
            f"the discriminator pass runs without helper threads: TorchScript failed ({err})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


@functools.cache
def fast_block() -> Callable[..., None] | None:
    """The fastest block function that runs without the interpreter lock: the native block
    (:func:`qcf_studio.engine.accel.native.pass_block`, the same numbers as :func:`pass_block`) for float32 rows, with
    the TorchScript one for other rows; or the TorchScript one alone; ``None`` if neither builds.

    The native block does the same products without the per-operation overhead of some fifty
    dispatched operations per block, and LeakyReLU, its derivative and the scaled rows as single loops
    (timings: docs/benchmarks.md, "Discriminator pass blocks").
    """
    native = native_block()
    if native is None:
        return compiled_block()

    def block(*args: Any) -> None:  # pass_block's arguments
        rows, split = args[6], args[13]
        if rows.dtype != torch.float32 or rows.device.type != "cpu" or split > 1 or not rows.is_contiguous():
            (compiled_block() or pass_block)(*args)
        else:
            native(*args[:12])  # (no workspace, no split)

    return block


def pass_block_kind() -> str:
    """How one-thread and helper-thread passes run their float32 blocks: ``"native"``, ``"torchscript"``
    or ``"python"``."""
    if native_block() is not None:
        return "native"
    return "torchscript" if compiled_block() is not None else "python"
