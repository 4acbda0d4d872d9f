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

    Features of an event ``x`` on the domain ``[a, b]`` are the scaled position and the logs of
    its distances to both ends, so that the power-law behaviour near the edges (which fixes the
    exponents of the QCFs) is as visible to the network as the bulk.
    """

    def __init__(self, n_observables: int, x_range: tuple[float, float], width: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.n_observables = n_observables
        self.a, self.b = float(x_range[0]), float(x_range[1])
        self.net = mlp(3 + n_observables, width, depth, 1)

    def features(self, events: Tensor, labels: Tensor) -> Tensor:
        span = self.b - self.a
        t = (events - self.a) / span
        eps = 1e-4
        f = torch.stack(
            [2.0 * t - 1.0, torch.log(torch.clamp(t, min=eps)), torch.log(torch.clamp(1.0 - t, min=eps))],
            dim=-1,
        )
        onehot = nn.functional.one_hot(labels, self.n_observables).to(events.dtype)
        return torch.cat([f, onehot], dim=-1)

    def forward(self, events: Tensor, labels: Tensor) -> Tensor:
        return self.net(self.features(events, labels)).squeeze(-1)
