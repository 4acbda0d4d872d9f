"""The generator (noise → bounded parameters) and the discriminator (events → real/fake logit).

How a step's events are judged by the discriminator: :mod:`qcf_studio.engine.gan.judging` (and, faster,
:mod:`qcf_studio.engine.accel`).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

__all__ = ["Generator", "Discriminator", "mlp"]


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
    def standardise_to(self, events: Tensor, counts: Tensor | None = None) -> None:
        """Z-score the event features per observable with the mean and standard deviation of
        ``events (O, N, D)`` (the measured events; of the first ``counts[o]`` of observable ``o`` if given)."""
        o, n, d = events.shape
        f = self.event_features(events.reshape(o * n, d)).reshape(o, n, -1)
        if counts is None:
            self.loc.copy_(f.mean(1))
            self.inv_scale.copy_(1.0 / f.std(1).clamp(min=1e-6))
        else:
            self.loc.copy_(torch.stack([f[k, : int(c)].mean(0) for k, c in enumerate(counts)]))
            std = torch.stack([f[k, : int(c)].std(0) for k, c in enumerate(counts)])
            self.inv_scale.copy_(1.0 / std.clamp(min=1e-6))
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
