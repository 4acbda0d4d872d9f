"""The discriminator's losses: the plain judgement (engine.gan.judging) and the hand-written pass (engine.accel)
against autograd written out here, for shared and per-observable networks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from qcf_studio.engine.accel.handpass import networks_pass
from qcf_studio.engine.gan.judging import judge
from qcf_studio.engine.gan.models import Discriminator

K, N = 3, 40  # observables (data sets), rows of each kind (real, generated) per observable


def _autograd_loss_d(d: Discriminator, real: Tensor, fake: Tensor, labels: Tensor, weights: Tensor | None):
    """Mean over observables of each one's discriminator loss (generated rows: weighted means)."""
    lr, lf = d(real, labels), d(fake, labels)
    loss_d = []
    for o in range(K):
        rows = labels == o
        w = torch.full((N,), 1.0 / N) if weights is None else weights[rows] / weights[rows].sum()
        loss_d.append(F.softplus(-lr[rows]).mean() + (F.softplus(lf[rows]) * w).sum())
    return torch.stack(loss_d).mean()


@pytest.mark.parametrize("weighted", [False, True])
def test_per_observable_pass_matches_autograd(weighted):
    torch.manual_seed(0)
    d = Discriminator(K, ((0.0, 1.0), (0.0, 1.0)), width=16, depth=2, per_observable=True)
    assert len(d.nets) == K and not hasattr(d, "net")
    labels = torch.arange(K).repeat_interleave(N)
    real, fake = torch.rand(K * N, 2) * 0.9 + 0.05, torch.rand(K * N, 2)
    weights = torch.rand(K * N) + 0.5 if weighted else None
    fr, ff = d.features(real, labels), d.features(fake, labels).requires_grad_()
    assert fr.shape[1] == 6  # position and two log-distances per coordinate, no label
    ev = networks_pass(d.networks, fr, ff.detach(), weights)
    hand = [p.grad.clone() for p in d.parameters()]
    plain = judge(d.networks, fr, ff, weights)
    by_judge = [p.grad.clone() for p in d.parameters()]

    d.zero_grad(set_to_none=True)
    loss_d = _autograd_loss_d(d, real, fake, labels, weights)
    loss_d.backward()
    assert float(ev.loss_d) == pytest.approx(float(loss_d.detach()), rel=1e-5)
    assert float(plain.loss_d) == pytest.approx(float(loss_d.detach()), rel=1e-5)
    for h, j, p in zip(hand, by_judge, d.parameters()):
        torch.testing.assert_close(h, p.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(j, p.grad, rtol=1e-4, atol=1e-7)
    # the generator's gradient w.r.t. the generated rows' features, network by network
    logits = torch.cat([d.nets[o](ff[o * N : (o + 1) * N]).squeeze(-1) for o in range(K)])
    loss_g = []
    for o in range(K):
        block = slice(o * N, (o + 1) * N)
        w = torch.full((N,), 1.0 / N) if weights is None else weights[block] / weights[block].sum()
        loss_g.append((F.softplus(-logits[o * N : (o + 1) * N]) * w).sum())
    (grad,) = torch.autograd.grad(torch.stack(loss_g).mean(), ff)
    assert float(ev.loss_g) == pytest.approx(float(torch.stack(loss_g).mean().detach()), rel=1e-5)
    torch.testing.assert_close(ev.grad_inputs, grad, rtol=1e-4, atol=1e-9)
    (plain_grad,) = torch.autograd.grad(plain.loss_g, ff)  # the plain judgement's loss reaches the rows
    assert float(plain.loss_g.detach()) == pytest.approx(float(ev.loss_g), rel=1e-5)
    torch.testing.assert_close(plain_grad, grad, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(plain.logits, ev.logits, rtol=1e-5, atol=1e-6)
    # the logits come back in the rows' order: real blocks, then generated blocks
    torch.testing.assert_close(ev.logits, torch.cat([d(real, labels), d(fake, labels)]).detach())


def test_shared_pass_matches_autograd():
    torch.manual_seed(1)
    d = Discriminator(K, ((0.0, 1.0),), width=16, depth=2, edge_features=False)
    labels = torch.arange(K).repeat_interleave(N)
    real, fake = torch.rand(K * N, 1), torch.rand(K * N, 1)
    ev = networks_pass(d.networks, d.features(real, labels), d.features(fake, labels))
    hand = [p.grad.clone() for p in d.parameters()]
    d.zero_grad(set_to_none=True)
    loss_d = _autograd_loss_d(d, real, fake, labels, None)  # equal blocks: the same as means over all rows
    loss_d.backward()
    assert float(ev.loss_d) == pytest.approx(float(loss_d.detach()), rel=1e-5)
    for h, p in zip(hand, d.parameters()):
        torch.testing.assert_close(h, p.grad, rtol=1e-4, atol=1e-7)


def test_per_observable_pass_refuses_unequal_blocks():
    d = Discriminator(K, ((0.0, 1.0),), width=8, per_observable=True)
    rows = torch.rand(2 * K * N + 1, 3)
    with pytest.raises(ValueError, match="equal blocks"):
        networks_pass(d.networks, rows[: K * N], rows[K * N :])
    with pytest.raises(ValueError, match="blocks"):
        judge(d.networks, rows[: K * N], rows[K * N :])


def test_one_observable_ignores_per_observable():
    d = Discriminator(1, ((0.0, 1.0),), width=8, per_observable=True)
    assert not d.per_observable and hasattr(d, "net")
