"""The generator (noise → bounded parameters) and the discriminator (events → real/fake logit)."""

from __future__ import annotations

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

    def __init__(self, lo: Tensor, hi: Tensor, noise_dim: int = 8, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.register_buffer("lo", lo.clone())
        self.register_buffer("hi", hi.clone())
        self.net = mlp(noise_dim, width, depth, lo.shape[0])

    def forward(self, noise: Tensor) -> Tensor:
        return self.lo + torch.sigmoid(self.net(noise)) * (self.hi - self.lo)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn((n, self.noise_dim), generator=generator, device=self.lo.device)
        return self(noise)


class Discriminator(nn.Module):
    """An MLP on per-event features plus a one-hot observable label; returns logits ``(N,)``.

    Features of an event coordinate ``x`` on the domain ``[a, b]`` are its scaled position and,
    with ``edge_features``, the logs of its distances to both ends, so that the power-law
    behaviour near the edges (which fixes the exponents of the QCFs) is as visible to the
    network as the bulk. With one observable there is no label input.

    Arguments:
        n_observables: observables (data sets) told apart by a one-hot label.
        domain: ``(a, b)`` per event coordinate.
        width, depth: hidden layers.
        edge_features: add the log-distance features.
    """

    def __init__(
        self,
        n_observables: int,
        domain: tuple[tuple[float, float], ...],
        width: int = 64,
        depth: int = 2,
        edge_features: bool = True,
    ) -> None:
        super().__init__()
        self.n_observables = n_observables
        self.edge_features = edge_features
        self.register_buffer("a", torch.tensor([float(a) for a, _ in domain]))
        self.register_buffer("span", torch.tensor([float(b - a) for a, b in domain]))
        per_coord = 3 if edge_features else 1
        n_labels = n_observables if n_observables > 1 else 0
        self.net = mlp(per_coord * len(domain) + n_labels, width, depth, 1)

    def features(self, events: Tensor, labels: Tensor) -> Tensor:
        """``events (N, D)`` and ``labels (N,)`` → features ``(N, F)``."""
        t = (events - self.a) / self.span
        parts = [2.0 * t - 1.0]
        if self.edge_features:
            eps = 1e-4
            parts += [torch.log(torch.clamp(t, min=eps)), torch.log(torch.clamp(1.0 - t, min=eps))]
        if self.n_observables > 1:
            parts.append(nn.functional.one_hot(labels, self.n_observables).to(events.dtype))
        return torch.cat(parts, dim=-1)

    def forward(self, events: Tensor, labels: Tensor) -> Tensor:
        return self.net(self.features(events, labels)).squeeze(-1)
