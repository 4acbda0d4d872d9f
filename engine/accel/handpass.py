"""The event discriminator's forward and backward pass by hand: both GAN losses from one pass.

The plain step (:mod:`qcf_studio.engine.gan.judging`) runs the discriminator through autograd. :func:`adversarial_pass`
computes the same gradients with one forward and one hand-written backward pass over blocks of rows
(see there for why that is exact), and :func:`network_pass` does it for a
:class:`~qcf_studio.engine.gan.models.Discriminator` with a network per observable. The blocks are
:mod:`qcf_studio.engine.accel.blocks`; :mod:`qcf_studio.engine.accel.threads` runs them on helper threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from qcf_studio.engine.accel.blocks import WEIGHT_GRAD_SPLIT, fast_block, pass_block

__all__ = [
    "AdversarialPass",
    "NetPass",
    "adversarial_pass",
    "split_pass",
    "networks_pass",
    "network_rows",
    "rows_of",
    "mean_over_networks",
    "PASS_BLOCK_ROWS_PER_THREAD",
]

# Rows of events per block, per torch thread: few enough that a block's activations (rows × width
# floats) stay in cache from the forward to the backward half, enough that per-operation overhead
# stays small (docs/benchmarks.md, "Discriminator pass blocks").
PASS_BLOCK_ROWS_PER_THREAD = 4096


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
# A pass over many blocks


class NetPass:
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
    block in two halves, so that threads sharing them finish closer together."""
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
    """Both GAN losses of an :func:`~qcf_studio.engine.gan.models.mlp` discriminator from one forward and one backward
    pass.

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
        net: ``Linear`` layers with ``LeakyReLU`` between them (from :func:`~qcf_studio.engine.gan.models.mlp`), one
        output.
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
    part = NetPass(net, real, real_weights, rows)
    part.add_generated(fake, weights)
    ws = {} if workspace is None else workspace
    split = WEIGHT_GRAD_SPLIT if torch.get_num_threads() > 1 else 1
    block = (fast_block() if split == 1 and real.device.type == "cpu" else None) or pass_block
    for b in range(len(part.blocks)):
        part.run(b, ws, block, split)
    return part.result()


# ---------------------------------------------------------------------------------------------
# A discriminator with one network, or one per observable


def network_rows(nets: Sequence[nn.Sequential], n_real: int, n_fake: int) -> tuple[int, int]:
    """Real and generated rows per network: the rows come in equal blocks, one per network in order."""
    k = len(nets)
    if n_real % k or n_fake % k:
        raise ValueError(f"{n_real} real and {n_fake} generated rows do not split into {k} equal blocks")
    return n_real // k, n_fake // k


@overload
def rows_of(x: Tensor, k: int, n: int) -> Tensor: ...
@overload
def rows_of(x: Tensor | None, k: int, n: int) -> Tensor | None: ...
def rows_of(x: Tensor | None, k: int, n: int) -> Tensor | None:
    """Rows ``k n`` to ``(k + 1) n`` of ``x`` (network ``k``'s block), or ``None``."""
    return None if x is None else x[k * n : (k + 1) * n]


def mean_over_networks(nets: Sequence[nn.Sequential], passes: list[AdversarialPass]) -> AdversarialPass:
    """One network per observable: the mean over observables of each network's own loss."""
    if len(passes) == 1:
        return passes[0]
    scale = 1.0 / len(passes)
    for net in nets:
        for p in net.parameters():
            if p.grad is not None:  # every pass sets them all
                p.grad.mul_(scale)
    weighted = passes[0].grad_weights is not None  # (every network's pass had weights, or none)
    grad_weights = (
        torch.cat([p.grad_weights for p in passes if p.grad_weights is not None]).mul_(scale) if weighted else None
    )
    return AdversarialPass(
        logits=torch.cat(
            [p.logits[: p.logits.shape[0] - p.grad_inputs.shape[0]] for p in passes]
            + [p.logits[p.logits.shape[0] - p.grad_inputs.shape[0] :] for p in passes]
        ),
        loss_d=torch.stack([p.loss_d for p in passes]).mean(),
        loss_g=torch.stack([p.loss_g for p in passes]).mean(),
        grad_inputs=torch.cat([p.grad_inputs for p in passes]).mul_(scale),
        grad_weights=grad_weights,
    )


def networks_pass(
    nets: Sequence[nn.Sequential],
    real: Tensor,
    fake: Tensor,
    weights: Tensor | None = None,
    real_weights: Tensor | None = None,
    workspaces: Sequence[dict[str, Tensor]] | None = None,
) -> AdversarialPass:
    """:func:`split_pass` of several networks, each on its block of the rows (see :func:`network_rows`); the
    losses and the generator's gradients are the means over the networks of each one's."""
    r, g = network_rows(nets, real.shape[0], fake.shape[0])
    passes = [
        split_pass(
            net,
            rows_of(real, k, r),
            rows_of(fake, k, g),
            rows_of(weights, k, g),
            rows_of(real_weights, k, r),
            workspace=None if workspaces is None else workspaces[k],
        )
        for k, net in enumerate(nets)
    ]
    return mean_over_networks(nets, passes)
