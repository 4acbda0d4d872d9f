"""How a discriminator judges a step's events: its loss and gradients, and the generator's loss.

The plain autograd version of the GAN's two losses, for a discriminator of one network or one per
observable (:attr:`~qcf_studio.engine.gan.models.Discriminator.networks`):

- the discriminator's loss ``BCE(real, 1) + BCE(generated, 0)``: means over the rows, a weighted mean
  over the generated rows when they carry weights (e.g. detector acceptances) and the mean of weight ×
  BCE over real rows with weights (normalised to mean 1 over the measured data); ln 4 at equilibrium;
- the generator's non-saturating loss ``BCE(generated, 1)``, weighted alike.

With a network per observable the rows come in equal blocks, one per network in order, and each loss
is the mean over the networks of each one's. Both losses see the discriminator as it is before its
update (simultaneous updates). :mod:`qcf_studio.engine.accel.handpass` computes the same numbers faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

__all__ = ["Judgement", "judge"]


@dataclass
class Judgement:
    """What judging a step's events gives.

    Attributes:
        loss_d: the discriminator's loss (no autograd history); the networks' ``.grad`` hold its gradients.
        loss_g: the generator's loss, differentiable w.r.t. the generated rows and their weights: its
            backward carries on through the detector, the sampler and the theory to the generator.
        logits: ``(N,)``, the real rows' first (no autograd history).
    """

    loss_d: Tensor
    loss_g: Tensor
    logits: Tensor


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


def judge(
    nets: Sequence[nn.Module],
    real: Tensor,
    fake: Tensor,
    weights: Tensor | None = None,
    real_weights: Tensor | None = None,
) -> Judgement:
    """Both losses of the discriminator ``nets`` on ``real (R, F)`` and generated ``fake (G, F)`` rows.

    Sets every network's ``.grad`` to ``∂ loss_d / ∂ parameter`` and returns the generator's loss with
    its autograd history, which reaches the generated rows and their weights only. ``weights`` weight
    the generated rows, ``real_weights`` the real rows' terms (mean 1 over the measured data).
    """
    k = len(nets)
    if real.shape[0] % k or fake.shape[0] % k:
        raise ValueError(f"{real.shape[0]} real and {fake.shape[0]} generated rows do not split into {k} blocks")
    r, g = real.shape[0] // k, fake.shape[0] // k
    # The networks as they are now, as copies: the discriminator may step before the generator's loss is
    # backpropagated, and that loss must still be the one it judged (simultaneous updates).
    copies = [{name: p.detach().clone().requires_grad_() for name, p in net.named_parameters()} for net in nets]
    losses_d, losses_g, logits_real, logits_fake = [], [], [], []
    for i, (net, params) in enumerate(zip(nets, copies)):
        rows_r, rows_g = slice(i * r, (i + 1) * r), slice(i * g, (i + 1) * g)
        l_real = functional_call(net, params, (real[rows_r],)).squeeze(-1)
        l_fake = functional_call(net, params, (fake[rows_g],)).squeeze(-1)
        w = None if weights is None else weights[rows_g]
        real_terms = F.softplus(-l_real)  # BCE(real, 1)
        if real_weights is not None:
            real_terms = real_terms * real_weights[rows_r]
        losses_d.append(real_terms.mean() + _weighted_mean(F.softplus(l_fake), w))  # + BCE(generated, 0)
        losses_g.append(_weighted_mean(F.softplus(-l_fake), w))  # BCE(generated, 1)
        logits_real.append(l_real.detach())
        logits_fake.append(l_fake.detach())
    loss_d, loss_g = torch.stack(losses_d).mean(), torch.stack(losses_g).mean()
    # only the networks' parameters: the generated rows and weights enter the discriminator's loss as given
    leaves = [t for params in copies for t in params.values()]
    grads = torch.autograd.grad(loss_d, leaves, retain_graph=True)
    for p, grad in zip((p for net in nets for _, p in net.named_parameters()), grads):
        p.grad = grad
    return Judgement(loss_d.detach(), loss_g, torch.cat(logits_real + logits_fake))
