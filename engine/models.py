"""The generator (noise → bounded parameters) and the discriminator (events → real/fake logit).

Training does not run the discriminator through autograd: :func:`adversarial_pass` sends real
and generated events through it once and backpropagates by hand (see there for why that is
exact; on 2 CPU cores it takes about half the time of the autograd D and G steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Generator", "Discriminator", "mlp", "AdversarialPass", "adversarial_pass"]

# Rows of events per block of the hand-written pass, per torch thread: few enough that a block's
# activations (rows × width floats) stay in cache from the forward to the backward half, enough
# that per-operation overhead stays small. On AMD EPYC cores (1 MiB L2 each, 32 MiB L3), full
# proxy2d steps of 20 000 rows: with 1 thread 4096 rows 2-7% faster than 8192 and 3072; with 2
# threads 8192 4-5% faster than 4096.
PASS_BLOCK_ROWS_PER_THREAD = 4096
# Batches the rows of a block are split into for its weight gradients (see _add_weight_grad).
WEIGHT_GRAD_SPLIT = 4


def mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with LeakyReLU, then a linear output layer."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """Maps noise vectors to parameter sets inside ``[lo, hi]``: ``θ = lo + sigmoid(f(z)) (hi − lo)``.

    A batch of noise vectors gives a batch of parameter sets: the generator's output is a
    distribution over parameters, whose spread is part of the uncertainty estimate.
    """

    def __init__(self, lo: Tensor, hi: Tensor, noise_dim: int = 8, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.register_buffer("lo", lo.clone())
        self.register_buffer("hi", hi.clone())
        self.net = mlp(noise_dim, width, depth, lo.shape[0])

    def forward(self, noise: Tensor) -> Tensor:
        return self.lo + torch.sigmoid(self.net(noise)) * (self.hi - self.lo)

    def sample(self, n: int, generator: torch.Generator | None = None, scale: float = 1.0) -> Tensor:
        """``n`` parameter sets from noise of standard deviation ``scale`` (0: all at the noise's centre)."""
        noise = torch.randn((n, self.noise_dim), generator=generator, device=self.lo.device)
        return self(noise if scale == 1.0 else noise * scale)


class Discriminator(nn.Module):
    """An MLP on per-event features plus a one-hot observable label; returns logits ``(N,)``.

    Features of an event coordinate ``x`` on the domain ``[a, b]`` are its scaled position and,
    with ``edge_features``, the logs of its distances to both ends, so that the power-law
    behaviour near the edges (which fixes the exponents of the QCFs) is as visible to the
    network as the bulk. With one observable there is no label input.

    :meth:`standardise_to` z-scores every feature per observable with the measured events' mean
    and standard deviation: gauss6's unit Gaussians occupy a few hundredths of their domain
    [−25, 20], too little of the network's input range to resolve them in.

    With ``per_observable`` each observable has a network of its own (``nets[o]``, no label input)
    instead of one network shared through the label: the same arithmetic per event, ``O`` times
    the parameters. A shared network must tell several density ratios apart with one set of
    hidden units.

    Arguments:
        n_observables: observables (data sets), told apart by a one-hot label or a network each.
        domain: ``(a, b)`` per event coordinate.
        width, depth: hidden layers.
        edge_features: add the log-distance features.
        per_observable: one network per observable (only with more than one).
    """

    def __init__(
        self,
        n_observables: int,
        domain: tuple[tuple[float, float], ...],
        width: int = 64,
        depth: int = 2,
        edge_features: bool = True,
        per_observable: bool = False,
    ) -> None:
        super().__init__()
        self.n_observables = n_observables
        self.edge_features = edge_features
        self.per_observable = per_observable and n_observables > 1
        self.register_buffer("a", torch.tensor([float(a) for a, _ in domain]))
        self.register_buffer("span", torch.tensor([float(b - a) for a, b in domain]))
        per_coord = 3 if edge_features else 1
        self.n_event_features = per_coord * len(domain)
        # per-observable z-scoring of the event features (identity until standardise_to)
        self.register_buffer("loc", torch.zeros(n_observables, self.n_event_features))
        self.register_buffer("inv_scale", torch.ones(n_observables, self.n_event_features))
        self.standardised = False
        if self.per_observable:
            self.nets = nn.ModuleList(mlp(self.n_event_features, width, depth, 1) for _ in range(n_observables))
        else:
            n_labels = n_observables if n_observables > 1 else 0
            self.net = mlp(self.n_event_features + n_labels, width, depth, 1)
        # scratch of adversarial_pass, one per network, reused between steps
        self._workspaces: list[dict[str, Tensor]] = [{} for _ in range(n_observables if self.per_observable else 1)]

    @property
    def networks(self) -> list[nn.Sequential]:
        """The MLPs: one per observable with ``per_observable``, else the shared one."""
        return list(self.nets) if self.per_observable else [self.net]

    def event_features(self, events: Tensor) -> Tensor:
        """``events (N, D)`` → unstandardised event features ``(N, F_e)``."""
        t = (events - self.a) / self.span
        parts = [2.0 * t - 1.0]
        if self.edge_features:
            eps = 1e-4
            parts += [torch.log(torch.clamp(t, min=eps)), torch.log(torch.clamp(1.0 - t, min=eps))]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    @torch.no_grad()
    def standardise_to(self, events: Tensor) -> None:
        """Z-score the event features per observable with the mean and standard deviation of
        ``events (O, N, D)`` (the measured events)."""
        o, n, d = events.shape
        f = self.event_features(events.reshape(o * n, d)).reshape(o, n, -1)
        self.loc.copy_(f.mean(1))
        self.inv_scale.copy_(1.0 / f.std(1).clamp(min=1e-6))
        self.standardised = True

    def features(self, events: Tensor, labels: Tensor) -> Tensor:
        """``events (N, D)`` and ``labels (N,)`` → features ``(N, F)``."""
        f = self.event_features(events)
        if self.standardised:
            if self.n_observables == 1:
                f = (f - self.loc[0]) * self.inv_scale[0]
            else:
                f = (f - self.loc.index_select(0, labels)) * self.inv_scale.index_select(0, labels)
        if self.n_observables > 1 and not self.per_observable:
            f = torch.cat([f, nn.functional.one_hot(labels, self.n_observables).to(events.dtype)], dim=-1)
        return f

    def forward(self, events: Tensor, labels: Tensor) -> Tensor:
        f = self.features(events, labels)
        if not self.per_observable:
            return self.net(f).squeeze(-1)
        logits = f.new_empty(f.shape[0])
        for o, net in enumerate(self.nets):
            rows = labels == o
            logits[rows] = net(f[rows]).squeeze(-1)
        return logits

    def adversarial_pass(
        self, features: Tensor, n_real: int, weights: Tensor | None = None, real_weights: Tensor | None = None
    ) -> AdversarialPass:
        """:func:`adversarial_pass` of this discriminator on ``features (N, F)``.

        With a network per observable the rows must come as the training step lays them out: the
        ``n_real`` real rows in equal blocks, one per observable in order, then the generated rows
        likewise. Each network sees its observable's rows; the losses and the generator's gradients
        are the means over the observables of each one's (without weights, the shared network's
        means over all rows).
        """
        if not self.per_observable:
            return adversarial_pass(self.net, features, n_real, weights, workspace=self._workspaces[0],
                                    real_weights=real_weights)
        o = self.n_observables
        n_fake = features.shape[0] - n_real
        if n_real % o or n_fake % o:
            raise ValueError(f"{n_real} real and {n_fake} generated rows do not split into {o} equal blocks")
        r, g = n_real // o, n_fake // o
        passes = []
        for k, net in enumerate(self.nets):
            rows = torch.cat([features[k * r : (k + 1) * r], features[n_real + k * g : n_real + (k + 1) * g]])
            passes.append(adversarial_pass(
                net, rows, r, None if weights is None else weights[k * g : (k + 1) * g],
                workspace=self._workspaces[k],
                real_weights=None if real_weights is None else real_weights[k * r : (k + 1) * r],
            ))
        scale = 1.0 / o
        for net in self.nets:  # the mean over observables of each network's own loss
            for p in net.parameters():
                p.grad.mul_(scale)
        grad_weights = None if weights is None else torch.cat([p.grad_weights for p in passes]).mul_(scale)
        return AdversarialPass(
            logits=torch.cat([p.logits[:r] for p in passes] + [p.logits[r:] for p in passes]),
            loss_d=torch.stack([p.loss_d for p in passes]).mean(),
            loss_g=torch.stack([p.loss_g for p in passes]).mean(),
            grad_inputs=torch.cat([p.grad_inputs for p in passes]).mul_(scale),
            grad_weights=grad_weights,
        )


def _add_weight_grad(grad: Tensor, scaled: Tensor, delta: Tensor, scratch: Callable[..., Tensor]) -> None:
    """``grad += scaled.T @ delta`` for a block's ``scaled (m, in + 1)`` and ``delta (m, out)``.

    A long reduction into a small matrix: the rows are split into :data:`WEIGHT_GRAD_SPLIT` batches
    of one product each, summed afterwards, which keeps every core busy (the library's own threading
    of the single product left the 3-row one of the first layer on one core; measured 110 against
    185 µs per 8192 rows for it and 500 against 550 µs for a 64-wide layer, 2 threads).
    """
    m, k = scaled.shape[0], WEIGHT_GRAD_SPLIT
    if m % k:
        grad.addmm_(scaled.t(), delta)
        return
    parts = torch.bmm(scaled.view(k, m // k, -1).transpose(1, 2), delta.view(k, m // k, -1),
                      out=scratch(f"wgrad{grad.shape[0]}x{grad.shape[1]}", k, *grad.shape))
    grad.add_(parts.sum(0))


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
    """Both GAN losses of an :func:`mlp` discriminator from one forward and one backward pass.

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
    activations stay in cache, in place in a reused workspace (LeakyReLU's derivative is read
    off its output): fresh multi-megabyte tensors each step would cost more in page faults than
    the arithmetic.

    Arguments:
        net: ``Linear`` layers with ``LeakyReLU`` between them (from :func:`mlp`), one output.
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
    linears = [m for m in net if isinstance(m, nn.Linear)]
    slopes = [m.negative_slope for m in net if isinstance(m, nn.LeakyReLU)]
    if len(slopes) != len(linears) - 1 or linears[-1].out_features != 1 or any(s <= 0 for s in slopes):
        raise ValueError("adversarial_pass needs Linear layers with LeakyReLU (slope > 0) between them, one output")
    hidden, w_out = linears[:-1], linears[-1].weight[0]
    n, n_fake = inputs.shape[0], inputs.shape[0] - n_real
    rows = min(block_rows or PASS_BLOCK_ROWS_PER_THREAD * torch.get_num_threads(), n)
    ws = {} if workspace is None else workspace

    def scratch(name: str, *shape: int) -> Tensor:
        buf = ws.get(name)
        if buf is None or buf.shape != shape or buf.dtype != inputs.dtype or buf.device != inputs.device:
            buf = ws[name] = inputs.new_empty(shape)
        return buf

    # The gradients of each layer accumulate as one (in + 1, out) matrix, weights transposed with
    # the bias as the last row: x.T @ delta is a fast product when x is skinny (delta.T @ x is
    # not; likewise W.T @ delta.T for the input gradients below).
    grads = [inputs.new_zeros(m.in_features + 1, m.out_features) for m in linears]
    w_in_t = linears[0].weight.t().contiguous()
    logits = inputs.new_empty(n)
    grad_inputs = inputs.new_empty(n_fake, inputs.shape[1])
    # Each row's weight in its loss (1 / rows for the means) and its target.
    row_weights = inputs.new_full((n,), 1.0 / max(n_real, 1))
    if real_weights is not None:
        row_weights[:n_real] = real_weights * (1.0 / max(n_real, 1))
    row_weights[n_real:] = 1.0 / max(n_fake, 1) if weights is None else weights / weights.sum()
    targets = inputs.new_zeros(n)
    targets[:n_real] = 1.0
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        acts = [inputs[start:stop]]  # inputs, then each hidden layer's output
        for k, (lin, slope) in enumerate(zip(hidden, slopes)):
            z = torch.addmm(lin.bias, acts[-1], lin.weight.t(), out=scratch(f"act{k}", rows, lin.out_features)[:m])
            acts.append(F.leaky_relu_(z, slope))
        logit = torch.addmv(linears[-1].bias, acts[-1], w_out, out=logits[start:stop])
        # ∂ loss_d / ∂ logit per row: (sigmoid(l) − target) × the row's weight in its mean.
        g_d = (torch.sigmoid(logit) - targets[start:stop]).mul_(row_weights[start:stop])
        grads[-1][:-1, 0].add_(g_d @ acts[-1])
        grads[-1][-1].add_(g_d.sum())
        # Backward of a unit logit gradient (delta = ∂ logit / ∂ pre-activation, in place of the
        # activations). The weight gradients scale each row's delta by its g_d: they are
        # [g_d x, g_d].T @ delta for a layer with input x (the bias's input is 1).
        delta = w_out.expand(m, -1)
        for k in range(len(hidden) - 1, -1, -1):
            # into a buffer of its own: written over its input, the result went through a temporary and a copy
            delta = torch.ops.aten.leaky_relu_backward.grad_input(
                delta, acts[k + 1], slopes[k], True, grad_input=scratch(f"back{k}", rows, acts[k + 1].shape[1])[:m]
            )
            width = acts[k].shape[1]
            scaled = scratch(f"scaled{width}", rows, width + 1)[:m]
            torch.mul(acts[k], g_d[:, None], out=scaled[:, :width])
            scaled[:, width] = g_d
            _add_weight_grad(grads[k], scaled, delta, scratch)
            if k > 0:
                delta = torch.mm(delta, hidden[k].weight, out=scratch(f"delta{width}", rows, width)[:m])
        if stop > n_real:  # ∂ loss_g / ∂ input of the generated rows: unit deltas × ∂ loss_g / ∂ logit
            lo = max(start, n_real) - start
            unit = delta[lo:] if not hidden else torch.mm(w_in_t, delta[lo:].t()).t()
            g_g = torch.sigmoid(-logit[lo:]).mul_(row_weights[start + lo : stop]).neg_()
            torch.mul(unit, g_g[:, None], out=grad_inputs[start + lo - n_real : stop - n_real])
    for lin, g in zip(linears, grads):
        lin.weight.grad, lin.bias.grad = g[:-1].t().contiguous(), g[-1].clone()

    l_real, l_fake = logits[:n_real], logits[n_real:]
    w_fake = row_weights[n_real:]
    loss_g_rows = F.softplus(-l_fake)
    loss_g = (loss_g_rows * w_fake).sum()
    real_terms = F.softplus(-l_real) if real_weights is None else F.softplus(-l_real) * real_weights
    loss_d = real_terms.mean() + (F.softplus(l_fake) * w_fake).sum()
    grad_weights = None if weights is None else (loss_g_rows - loss_g) / weights.sum()
    return AdversarialPass(logits, loss_d, loss_g, grad_inputs, grad_weights)
