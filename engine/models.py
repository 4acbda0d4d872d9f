"""The generator (noise → bounded parameters) and the discriminator (events → real/fake logit).

Training does not run the discriminator through autograd: :mod:`engine.adversarial` does its
forward and backward pass by hand.
"""

from __future__ import annotations

from typing import cast, overload

import torch
from torch import Tensor, nn

from engine.adversarial import AdversarialPass, PassThreads, PendingPass, adversarial_pass, split_pass

__all__ = ["Generator", "Discriminator", "mlp", "AdversarialPass", "adversarial_pass"]


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

    # buffers (register_buffer), declared for the type checker
    lo: Tensor
    hi: Tensor

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

    # buffers (register_buffer), declared for the type checker
    a: Tensor
    span: Tensor
    loc: Tensor
    inv_scale: Tensor

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
        # nets holds mlp()s only; a ModuleList's items are typed Module
        return [cast(nn.Sequential, n) for n in self.nets] if self.per_observable else [self.net]

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
        """:func:`~engine.adversarial.adversarial_pass` of this discriminator on ``features (N, F)``.

        With a network per observable the rows must come as the training step lays them out: the
        ``n_real`` real rows in equal blocks, one per observable in order, then the generated rows
        likewise. Each network sees its observable's rows; the losses and the generator's gradients
        are the means over the observables of each one's (without weights, the shared network's
        means over all rows).
        """
        if not self.per_observable:
            return adversarial_pass(
                self.net, features, n_real, weights, workspace=self._workspaces[0], real_weights=real_weights
            )
        r, g = self._rows_per_network(n_real, features.shape[0] - n_real)
        real, fake = features[:n_real], features[n_real:]
        passes = [
            split_pass(
                net,
                real[k * r : (k + 1) * r],
                fake[k * g : (k + 1) * g],
                _rows(weights, k, g),
                _rows(real_weights, k, r),
                workspace=self._workspaces[k],
            )
            for k, net in enumerate(self.networks)
        ]
        return self._mean_over_networks(passes, weights is not None)

    def begin_pass(self, threads: PassThreads, real: Tensor, real_weights: Tensor | None = None) -> PendingPass:
        """The same pass on helper threads, in two halves: this one starts the ``real`` rows' blocks
        (laid out as for :meth:`adversarial_pass`), :meth:`finish_pass` adds the generated rows."""
        r, _ = self._rows_per_network(real.shape[0], 0)
        nets = self.networks
        return threads.begin(
            nets, [_rows(real, k, r) for k in range(len(nets))], [_rows(real_weights, k, r) for k in range(len(nets))]
        )

    def finish_pass(self, pending: PendingPass, fake: Tensor, weights: Tensor | None = None) -> AdversarialPass:
        """Completes :meth:`begin_pass` with the generated rows; the same result as :meth:`adversarial_pass`
        on all rows with the same blocks."""
        _, g = self._rows_per_network(0, fake.shape[0])
        n = len(self.networks)
        passes = pending.finish(
            [_rows(fake, k, g) for k in range(n)], [_rows(weights, k, g) for k in range(n)], self._workspaces[0]
        )
        return passes[0] if n == 1 else self._mean_over_networks(passes, weights is not None)

    def _rows_per_network(self, n_real: int, n_fake: int) -> tuple[int, int]:
        o = self.n_observables if self.per_observable else 1
        if n_real % o or n_fake % o:
            raise ValueError(f"{n_real} real and {n_fake} generated rows do not split into {o} equal blocks")
        return n_real // o, n_fake // o

    def _mean_over_networks(self, passes: list[AdversarialPass], weighted: bool) -> AdversarialPass:
        """One network per observable: the mean over observables of each network's own loss."""
        scale = 1.0 / len(passes)
        for net in self.nets:
            for p in net.parameters():
                if p.grad is not None:  # every pass sets them all
                    p.grad.mul_(scale)
        # weighted: every network's pass had weights, so each has grad_weights
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


@overload
def _rows(x: Tensor, k: int, n: int) -> Tensor: ...
@overload
def _rows(x: Tensor | None, k: int, n: int) -> Tensor | None: ...
def _rows(x: Tensor | None, k: int, n: int) -> Tensor | None:
    """Rows ``k n`` to ``(k + 1) n`` of ``x`` (network ``k``'s block), or ``None``."""
    return None if x is None else x[k * n : (k + 1) * n]
