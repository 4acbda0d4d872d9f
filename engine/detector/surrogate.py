"""A learned detector: a mixture density network trained on (truth, detector) pairs of an analytic detector and
sampled with the reparameterisation trick in place of the smearing; training, saving and loading."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from qcf_studio.engine.detector._common import Domain, _check_events, _coord_axis, _detect, _domain_tensors

__all__ = ["SurrogateSmearing"]


class SurrogateSmearing(nn.Module):
    """A learned detector: a mixture density network for ``p(target | x_true)``, used in place of the smearing.

    The network maps the truth position, scaled to [−1, 1] on the domain, through an MLP
    ``D → hidden → hidden → K (2 D + 1)`` to a mixture of ``K`` diagonal Gaussians over the target, which is the
    relative shift ``r = 1 − x_det / x_true`` per coordinate (``relative=True``) or the shift
    ``x_det − x_true`` (``relative=False``), in units of its spread in the training pairs.

    Sampling uses the reparameterisation trick: ``target = μ_k(x) + σ_k(x) ε``, so detector-level events are
    differentiable w.r.t. the truth positions through ``x``, ``μ_k`` and ``σ_k``. The component ``k`` is drawn
    without a gradient (the gradient through the mixture weights is dropped). Pseudo-data (``apply_to_data``) go
    through the analytic detector the surrogate was trained from, when it is known (``reference``), else
    through the surrogate.

    Build one with :meth:`train_from`; save with ``torch.save(s.state_dict(), path)`` and restore with
    ``SurrogateSmearing.from_state_dict(torch.load(path, weights_only=True))``.

    Arguments:
        domain: ``[(lo, hi), ...]`` of the truth positions, one pair per coordinate.
        components: ``K``, the number of Gaussian components.
        hidden: width of the two hidden layers.
        relative: model the relative shift (multiplicative detectors) rather than the absolute one.
        coord_axis: whether events carry a coordinate axis (default: more than one coordinate).
    """

    differentiable = True
    gradient_note = "surrogate: reparameterised sampling, component choice without gradient"
    # buffers (register_buffer), declared for the type checker
    lo: Tensor
    hi: Tensor
    target_scale: Tensor
    relative: Tensor

    def __init__(
        self,
        domain: Domain,
        components: int = 3,
        hidden: int = 64,
        relative: bool = True,
        coord_axis: bool | None = None,
    ) -> None:
        super().__init__()
        lo, hi = _domain_tensors(domain)
        self.dims = d = lo.shape[0]
        self.coord_axis = _coord_axis(d, coord_axis)
        if components < 1 or hidden < 1:
            raise ValueError(f"components and hidden must be >= 1, got {components}, {hidden}")
        self.components = k = int(components)
        self.register_buffer("lo", lo.float())
        self.register_buffer("hi", hi.float())
        self.register_buffer("target_scale", torch.ones(d))
        self.register_buffer("relative", torch.tensor(bool(relative)))
        self.net = nn.Sequential(
            nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, k * (2 * d + 1))
        )
        with torch.no_grad():  # start near one unit Gaussian per component, means spread a little
            last = cast(nn.Linear, self.net[-1])  # the output layer built just above
            last.weight.mul_(0.1)
            last.bias.zero_()
            last.bias[k : k + k * d].copy_(torch.linspace(-1, 1, k).repeat_interleave(d) if k > 1 else torch.zeros(d))
        self.reference: Any = None
        self.history: list[float] = []  # training: mean negative log-likelihood per epoch

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "reference":  # a plain attribute: not a submodule, not in the state dict
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- the mixture -------------------------------------------------------------------------------

    def mixture(self, x_true: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log mixture weights ``(M, K)``, means and log widths ``(M, K, D)`` of the scaled target at
        ``x_true`` ``(M, D)``."""
        z = 2 * (x_true.float() - self.lo) / (self.hi - self.lo) - 1
        out = self.net(z)
        m, k, d = out.shape[0], self.components, self.dims
        log_pi = torch.log_softmax(out[:, :k], -1)
        mu = out[:, k : k + k * d].reshape(m, k, d)
        log_sigma = out[:, k + k * d :].reshape(m, k, d).clamp(-7.0, 5.0)
        return log_pi, mu, log_sigma

    def _target(self, x_true: Tensor, x_det: Tensor) -> Tensor:
        t = 1 - x_det / x_true if bool(self.relative) else x_det - x_true
        return t / self.target_scale.to(t)

    def log_prob(self, x_true: Tensor, x_det: Tensor) -> Tensor:
        """Log density of the scaled target given ``x_true``, per pair ``(M,)``; inputs ``(M, D)``."""
        log_pi, mu, log_sigma = self.mixture(x_true)
        t = self._target(x_true, x_det).float().unsqueeze(1)
        log_n = (-0.5 * ((t - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(log_pi + log_n, -1)

    def sample(self, x_true: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Detector-level events for truth positions ``(M, D)``, differentiable w.r.t. ``x_true``."""
        log_pi, mu, log_sigma = self.mixture(x_true)
        m = x_true.shape[0]
        u = torch.rand((m, 1), generator=generator, device=x_true.device)
        k = (log_pi.detach().exp().cumsum(-1) < u).sum(-1).clamp(max=self.components - 1)
        pick = k.view(m, 1, 1).expand(m, 1, self.dims)
        mu_k, sigma_k = mu.gather(1, pick).squeeze(1), log_sigma.gather(1, pick).squeeze(1).exp()
        eps = torch.randn((m, self.dims), generator=generator, device=x_true.device)
        t = ((mu_k + sigma_k * eps) * self.target_scale).to(x_true.dtype)
        return x_true * (1 - t) if bool(self.relative) else x_true + t

    # --- effect interface ---------------------------------------------------------------------------

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        _check_events(events, self.dims, self.coord_axis)
        flat = events.reshape(-1, self.dims)
        return self.sample(flat, generator).reshape(events.shape), weights

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.reference is not None:
            return _detect(self.reference, events, generator)
        with torch.no_grad():
            return self(events, None, generator)[0]

    # --- training and persistence -------------------------------------------------------------------

    @classmethod
    def train_from(
        cls,
        detector: Any,
        domain: Domain,
        *,
        events: int = 100_000,
        epochs: int = 20,
        components: int = 3,
        hidden: int = 64,
        batch: int = 8192,
        lr: float = 1e-2,
        relative: bool = True,
        truth: Tensor | None = None,
        coord_axis: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> SurrogateSmearing:
        """Train on ``events`` (truth, detector) pairs by maximum likelihood with Adam (cosine-decayed ``lr``).

        Arguments:
            detector: the detector to learn, called as ``detector(x, generator=gen)`` on truth events of shape
                ``(M, D)`` (e.g. :class:`ResolutionSmearing`); it becomes the surrogate's ``reference``.
            domain: ``[(lo, hi), ...]`` of the truth positions.
            events: number of training pairs.
            epochs: passes over the pairs, in mini-batches of ``batch``.
            truth: truth positions ``(M, D)`` to use instead of uniform draws on the domain.
            generator: random source of the pairs, the batches and the initial weights.
        """
        seed = int(torch.randint(2**62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):  # reproducible initial weights under ``generator``
            if seed is not None:
                torch.manual_seed(seed)
            model = cls(domain, components=components, hidden=hidden, relative=relative, coord_axis=coord_axis)
        d = model.dims
        if truth is None:
            u = torch.rand((events, d), generator=generator)
            truth = model.lo + u * (model.hi - model.lo)
        truth = truth.reshape(-1, d).float()
        with torch.no_grad():
            det = _detect(detector, truth, generator).reshape(-1, d).float()
        t = 1 - det / truth if relative else det - truth
        ok = torch.isfinite(t).all(-1) & (truth.abs() > 0).all(-1)
        truth, det, t = truth[ok], det[ok], t[ok]
        scale = t.std(0).clamp_min(1e-12)
        if not (t.std(0) > 0).all():
            raise ValueError("the detector does not change the events; nothing to learn")
        model.target_scale.copy_(scale)
        n = truth.shape[0]
        steps_per_epoch = max(1, math.ceil(n / batch))
        opt = torch.optim.Adam(model.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch, eta_min=lr / 50)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator)
            total = 0.0
            for i in range(steps_per_epoch):
                idx = perm[i * batch : (i + 1) * batch]
                loss = -model.log_prob(truth[idx], det[idx]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            model.history.append(total / steps_per_epoch)  # mean negative log-likelihood per epoch
        model.reference = detector
        return model.eval()

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], coord_axis: bool | None = None) -> SurrogateSmearing:
        """Rebuild a surrogate from its ``state_dict()`` (sizes are read from the tensors)."""
        lo, hi = state["lo"], state["hi"]
        d = lo.shape[0]
        hidden = state["net.0.weight"].shape[0]
        components = state["net.4.weight"].shape[0] // (2 * d + 1)
        domain = list(zip(lo.tolist(), hi.tolist()))
        model = cls(domain, components, hidden, bool(state["relative"]), coord_axis)
        model.load_state_dict(state)
        return model.eval()

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, coord_axis: bool | None = None) -> SurrogateSmearing:
        return cls.from_state_dict(torch.load(path, weights_only=True), coord_axis)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, components={self.components}, relative={bool(self.relative)}"
