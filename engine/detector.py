"""Detector ("experiment") effects as torch modules, applied alike to generated events and to pseudo-data.

Every effect works for any problem. Events are laid out as

- ``(..., N)`` for 1D events (``coord_axis=False``, the default when ``dims == 1``), or
- ``(..., N, D)`` with the event coordinates on the last axis (``coord_axis=True``, always when ``dims > 1``;
  the engine's 1D events ``(..., N, 1)`` use ``coord_axis=True`` with ``dims == 1``).

Per-event weights have the shape of one coordinate: ``events.shape[:-1]`` with a coordinate axis, else
``events.shape``; ``None`` means unit weights.

Common interface of an effect::

    events, weights = effect(events, weights, generator)   # generated events: differentiable, fixed shape
    events = effect.apply_to_data(events, generator)        # pseudo-data: accept-reject, no weights

:class:`DetectorChain` applies effects in order and :func:`build_detector` builds one from the ``detector``
section of a spec. :class:`ResolutionSmearing` also keeps its original call ``smear(events, generator=gen)``,
which returns the smeared events alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "Acceptance",
    "Background",
    "DetectorChain",
    "DetectorConfigError",
    "ResolutionSmearing",
    "SurrogateSmearing",
    "build_detector",
]

Domain = Sequence[tuple[float, float]]
_MISSING: Any = object()


def _coord_axis(dims: int, coord_axis: bool | None) -> bool:
    if dims < 1:
        raise ValueError(f"dims must be at least 1, got {dims}")
    if coord_axis is None:
        return dims > 1
    if dims > 1 and not coord_axis:
        raise ValueError(f"{dims}-dimensional events need a coordinate axis (coord_axis=True)")
    return bool(coord_axis)


def _check_events(events: Tensor, dims: int, coord_axis: bool) -> None:
    if coord_axis and (events.ndim < 2 or events.shape[-1] != dims):
        raise ValueError(f"expected events of shape (..., N, {dims}), got {tuple(events.shape)}")
    if not coord_axis and events.ndim < 1:
        raise ValueError("expected events of shape (..., N), got a scalar")


def _per_coord(name: str, value: float | Sequence[float], dims: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * dims
    values = [float(v) for v in value]
    if len(values) != dims:
        raise ValueError(f"{name}: expected one value or {dims}, got {len(values)}")
    return values


def _domain_tensors(domain: Domain) -> tuple[Tensor, Tensor]:
    pairs = [tuple(map(float, p)) for p in domain]
    if not pairs or any(len(p) != 2 or not p[0] < p[1] for p in pairs):
        raise ValueError(f"domain: expected (lo, hi) pairs with lo < hi, got {list(domain)!r}")
    lo, hi = zip(*pairs)
    return torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)


def _thin(events: Tensor, keep: Tensor, coord_axis: bool) -> Tensor:
    """Keep the events where ``keep`` along the event axis; sets with a leading batch shape are cut to the
    smallest kept count (the kept events of a set are i.i.d., so its first ``M`` are an unbiased subset)."""
    n_axis = keep.ndim - 1
    m = int(keep.sum(-1).min()) if keep.ndim > 1 else int(keep.sum())
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[..., :m]  # kept first, in order
    if coord_axis:
        order = order.unsqueeze(-1).expand(*order.shape, events.shape[-1])
    return torch.gather(events, n_axis, order)


class ResolutionSmearing(nn.Module):
    """Relative resolution smearing ``x → x (1 − R)`` with ``R ~ N(0, resolution²)``, per coordinate.

    Differentiable w.r.t. the events (the noise is drawn independently of them), so the
    generator's gradient passes through. A resolution of 0 is the identity. Works for any event layout.

    Calls:
        ``smear(events, generator=gen) -> events`` (the original call), or
        ``smear(events, weights, generator) -> (events, weights)`` (the common effect interface; weights pass
        through unchanged).

    Arguments:
        resolution: the standard deviation of ``R``.
    """

    differentiable = True
    gradient_note = "resolution: reparameterised noise, events differentiable"

    def __init__(self, resolution: float = 0.0) -> None:
        super().__init__()
        if resolution < 0:
            raise ValueError(f"resolution must be >= 0, got {resolution}")
        self.resolution = float(resolution)

    def smear(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.resolution == 0.0:
            return events
        noise = torch.randn(events.shape, generator=generator, dtype=events.dtype, device=events.device)
        return events * (1.0 - self.resolution * noise)

    def forward(
        self, events: Tensor, weights: Tensor | None = _MISSING, generator: torch.Generator | None = None
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        if isinstance(weights, torch.Generator):  # old positional call smear(events, gen)
            weights, generator = _MISSING, weights
        if weights is _MISSING:
            return self.smear(events, generator)
        return self.smear(events, generator), weights

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.smear(events, generator)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution:g}"


class Acceptance(nn.Module):
    """Smooth acceptance × efficiency ``ε(x) = max · Π_d sigmoid((x_d − turn_on_d) / width_d)``.

    Generated events keep their positions and have their weights multiplied by ``ε(x)``, which is differentiable
    w.r.t. ``x`` (weight the discriminator's loss with them); pseudo-data keep each event with probability
    ``ε(x)`` (accept-reject), so both describe the same distribution.

    Arguments:
        turn_on: position of the 50 % point of the turn-on, one value or one per coordinate.
        width: width of the logistic turn-on (> 0), one value or one per coordinate.
        max: plateau efficiency in (0, 1].
        dims: number of event coordinates.
        coord_axis: whether events carry a coordinate axis (default: ``dims > 1``).
    """

    differentiable = True
    gradient_note = "acceptance: weights ε(x) differentiable w.r.t. x (data: accept-reject)"

    def __init__(
        self,
        turn_on: float | Sequence[float],
        width: float | Sequence[float],
        max: float = 1.0,
        dims: int = 1,
        coord_axis: bool | None = None,
    ) -> None:
        super().__init__()
        self.coord_axis = _coord_axis(dims, coord_axis)
        self.dims = dims
        t, w = _per_coord("turn_on", turn_on, dims), _per_coord("width", width, dims)
        if not all(v > 0 and math.isfinite(v) for v in w):
            raise ValueError(f"width must be > 0, got {w}")
        if not 0 < max <= 1:
            raise ValueError(f"max must be in (0, 1], got {max}")
        self.max = float(max)
        self.register_buffer("turn_on", torch.tensor(t, dtype=torch.float64))
        self.register_buffer("width", torch.tensor(w, dtype=torch.float64))

    def efficiency(self, events: Tensor) -> Tensor:
        """``ε(x)`` per event, shape of the weights; differentiable w.r.t. ``events``."""
        _check_events(events, self.dims, self.coord_axis)
        t, w = self.turn_on.to(events), self.width.to(events)
        if self.coord_axis:
            return self.max * torch.exp(F.logsigmoid((events - t) / w).sum(-1))
        return self.max * torch.sigmoid((events - t[0]) / w[0])

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        eff = self.efficiency(events)
        return events, eff if weights is None else weights * eff

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eff = self.efficiency(events)
        u = torch.rand(eff.shape, generator=generator, dtype=eff.dtype, device=eff.device)
        return _thin(events, u < eff, self.coord_axis)

    def extra_repr(self) -> str:
        return f"turn_on={self.turn_on.tolist()}, width={self.width.tolist()}, max={self.max:g}"


class Background(nn.Module):
    """Admixture of background of a known shape: a fixed fraction ``round(f · N)`` of each event set is
    replaced by background draws on the domain (the replaced slots are chosen with the generator).

    Shapes, per coordinate (independent): ``uniform`` on ``[lo, hi]``, or ``exponential`` with density
    ``∝ exp(slope · x)`` truncated to ``[lo, hi]``. The background does not depend on θ, so replaced events
    carry no gradient; the others keep theirs. Replaced events get the mean weight of the kept ones, so the
    background is the fraction ``f`` of the weighted events too. Pseudo-data: the same on the events present.

    Arguments:
        domain: ``[(lo, hi), ...]``, one pair per coordinate.
        fraction: background fraction ``f`` in [0, 1).
        shape: ``"uniform"`` or ``"exponential"``.
        slope: exponential slope(s) per unit of ``x`` (one value or one per coordinate); exponential only.
        coord_axis: whether events carry a coordinate axis (default: more than one coordinate).
    """

    differentiable = True
    gradient_note = "background: replaced events carry no gradient (θ-independent), the others keep theirs"
    SHAPES = ("uniform", "exponential")

    def __init__(
        self,
        domain: Domain,
        fraction: float,
        shape: str = "uniform",
        slope: float | Sequence[float] = -1.0,
        coord_axis: bool | None = None,
    ) -> None:
        super().__init__()
        lo, hi = _domain_tensors(domain)
        self.dims = lo.shape[0]
        self.coord_axis = _coord_axis(self.dims, coord_axis)
        if not 0 <= fraction < 1:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        if shape not in self.SHAPES:
            raise ValueError(f"shape must be one of {', '.join(self.SHAPES)}, got {shape!r}")
        self.fraction, self.shape = float(fraction), shape
        s = _per_coord("slope", slope, self.dims) if shape == "exponential" else [0.0] * self.dims
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.register_buffer("slope", torch.tensor(s, dtype=torch.float64))

    def density(self, x: Tensor) -> Tensor:
        """Normalised background density at ``x`` (layout as the events), zero outside the domain."""
        lo, hi, s = (b.to(x) for b in (self.lo, self.hi, self.slope))
        if not self.coord_axis:
            x = x.unsqueeze(-1)
        length = hi - lo
        small = s.abs() * length < 1e-8
        s_safe = torch.where(small, torch.ones_like(s), s)
        # exp(s (x - lo)) * s / expm1(s L), written to stay finite for large |s L|
        log_norm = torch.where(small, -torch.log(length), torch.log(s_safe.abs()) - _log_abs_expm1(s_safe * length))
        log_p = torch.where(small, torch.zeros_like(x), s * (x - lo)) + log_norm
        inside = (x >= lo) & (x <= hi)
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf)).sum(-1).exp()

    def sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Background events of batch shape ``shape`` (plus the coordinate axis when ``coord_axis``)."""
        u = torch.rand((*shape, self.dims), generator=generator, dtype=torch.float64, device=device)
        lo, hi, s = (b.to(device) for b in (self.lo, self.hi, self.slope))
        length = hi - lo
        small = s.abs() * length < 1e-8
        s_safe = torch.where(small, torch.ones_like(s), s)
        # inverse CDF of exp(s x) on [lo, hi], from the edge where the density is largest
        neg = lo + torch.log1p(u * torch.expm1(s_safe * length)) / s_safe
        pos = hi + torch.log1p((1 - u) * torch.expm1(-s_safe * length)) / s_safe
        x = torch.where(small, lo + u * length, torch.where(s_safe < 0, neg, pos))
        x = torch.minimum(torch.maximum(x, lo), hi).to(dtype)
        return x if self.coord_axis else x.squeeze(-1)

    def _replace(self, events: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        n = events.shape[-2] if self.coord_axis else events.shape[-1]
        n_bg = round(self.fraction * n)
        idx = torch.randperm(n, generator=generator, device=events.device)[:n_bg]
        batch = events.shape[:-2] if self.coord_axis else events.shape[:-1]
        bg = self.sample((*batch, n_bg), generator, events.dtype, events.device)
        out = events.clone()
        if self.coord_axis:
            out[..., idx, :] = bg
        else:
            out[..., idx] = bg
        return out, idx

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        _check_events(events, self.dims, self.coord_axis)
        if self.fraction == 0.0:
            return events, weights
        out, idx = self._replace(events, generator)
        if weights is not None and idx.numel():
            mask = torch.ones(weights.shape[-1], dtype=torch.bool, device=weights.device)
            mask[idx] = False
            mean_kept = weights[..., mask].mean(-1, keepdim=True) if mask.any() else weights.mean(-1, keepdim=True)
            weights = weights.clone()
            weights[..., idx] = mean_kept.expand(*weights.shape[:-1], idx.numel())
        return out, weights

    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_events(events, self.dims, self.coord_axis)
        return events if self.fraction == 0.0 else self._replace(events, generator)[0]

    def extra_repr(self) -> str:
        slope = f", slope={self.slope.tolist()}" if self.shape == "exponential" else ""
        return f"fraction={self.fraction:g}, shape={self.shape}{slope}"


def _log_abs_expm1(z: Tensor) -> Tensor:
    """``log|exp(z) − 1|`` without overflow."""
    return torch.where(z > 0, z + torch.log(-torch.expm1(-z)), torch.log(-torch.expm1(z)))


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
            last = self.net[-1]
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


def _detect(detector: Any, events: Tensor, generator: torch.Generator | None) -> Tensor:
    """Detector-level events from an old-style (tensor) or new-style ((events, weights)) detector."""
    if hasattr(detector, "apply_to_data"):
        return detector.apply_to_data(events, generator)
    out = detector(events, generator=generator)
    return out[0] if isinstance(out, tuple) else out


class DetectorChain(nn.Module):
    """Detector effects applied in order; an empty chain is the identity.

    ``chain(events, weights=None, generator=None) -> (events, weights)`` for generated events (fixed shape,
    gradients kept; see :attr:`gradient_note`), ``chain.apply_to_data(events, generator) -> events`` for
    pseudo-data (accept-reject; no gradients; with a leading batch shape each set is cut to the smallest count).
    """

    def __init__(self, effects: Iterable[nn.Module] = ()) -> None:
        super().__init__()
        self.effects = nn.ModuleList(effects)

    def forward(
        self, events: Tensor, weights: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        for effect in self.effects:
            events, weights = effect(events, weights, generator)
        return events, weights

    @torch.no_grad()
    def apply_to_data(self, events: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for effect in self.effects:
            events = effect.apply_to_data(events, generator)
        return events

    @property
    def differentiable(self) -> bool:
        """Whether events and weights of generated events pass gradients w.r.t. the truth positions."""
        return all(getattr(e, "differentiable", False) for e in self.effects)

    @property
    def gradient_note(self) -> str:
        """One line per effect on how gradients pass through it."""
        return "\n".join(getattr(e, "gradient_note", type(e).__name__) for e in self.effects) or "identity"

    @property
    def weighted(self) -> bool:
        """Whether generated events come with weights (an acceptance is in the chain)."""
        return any(isinstance(e, Acceptance) for e in self.effects)

    def __len__(self) -> int:
        return len(self.effects)


# --- the spec section -------------------------------------------------------------------------------


class DetectorConfigError(ValueError):
    """An invalid ``detector`` section: ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_KEYS = {
    "": ("resolution", "acceptance", "background", "surrogate"),
    "acceptance": ("turn_on", "width", "max"),
    "background": ("fraction", "shape", "slope"),
    "surrogate": ("events", "epochs", "components", "hidden", "seed"),
}


def _section(path: str, raw: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise DetectorConfigError(path, f"expected a mapping, got {raw!r}")
    for key in raw:
        if key not in allowed:
            raise DetectorConfigError(f"{path}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    return {k: v for k, v in raw.items() if v is not None}


def _num(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DetectorConfigError(path, f"expected a finite number, got {value!r}")
    return float(value)


def _nums(path: str, value: Any, dims: int) -> list[float]:
    if isinstance(value, (list, tuple)):
        if len(value) != dims:
            raise DetectorConfigError(path, f"expected one number or a list of {dims}, got {len(value)}")
        return [_num(f"{path}[{i}]", v) for i, v in enumerate(value)]
    return [_num(path, value)] * dims


def _int(path: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DetectorConfigError(path, f"expected a whole number, got {value!r}")
    if value < minimum:
        raise DetectorConfigError(path, f"must be at least {minimum}, got {value}")
    return value


def build_detector(
    cfg: Mapping[str, Any] | None,
    domain: Domain,
    *,
    coord_axis: bool | None = None,
    path: str = "detector",
    validate_only: bool = False,
) -> DetectorChain:
    """Build the detector chain from the ``detector`` section of a spec (validated here).

    All keys are optional; an absent or null key switches its effect off. Effects run in the order
    smearing (analytic or learned) → acceptance → background.

    Keys:
        resolution (float, 0.0): relative resolution ``σ_R`` of ``x → x (1 − R)``, ``R ~ N(0, σ_R²)``; in [0, 0.5].
        acceptance (mapping): smooth turn-on ``ε(x) = max · Π_d sigmoid((x_d − turn_on_d) / width_d)``:
            turn_on (number or list per coordinate, default: the domain's lower edge): the 50 % point;
            width (number or list, default: 5 % of the domain's width): > 0;
            max (float, 1.0): plateau efficiency in (0, 1].
        background (mapping): a known background admixed with fraction ``f`` on the domain:
            fraction (float, 0.1): in [0, 1);
            shape (``uniform`` | ``exponential``, ``uniform``): per coordinate;
            slope (number or list, -1.0): density ``∝ exp(slope · x)``; only with ``shape: exponential``.
        surrogate (mapping): learn the resolution smearing with a mixture density network and use it instead
            (needs ``resolution > 0``); trained on truth positions uniform on the domain:
            events (int, 100000): training pairs, at least 1000;
            epochs (int, 20): passes over the pairs (batches of 8192);
            components (int, 3): Gaussian components, 1 to 16;
            hidden (int, 64): width of the two hidden layers, 4 to 512;
            seed (int, 0): seed of the pairs and of the initial weights.

    Arguments:
        cfg: the section (``None`` or ``{}``: no detector effects).
        domain: the problem's domain, ``[(lo, hi), ...]`` per coordinate.
        coord_axis: whether events carry a coordinate axis (default: more than one coordinate; the engine's
            ``(..., N, 1)`` events of 1D problems need ``True``).
        path: the section's name in error messages.
        validate_only: check the section but do not train a surrogate (the chain then smears analytically).

    Raises:
        DetectorConfigError (a ValueError): ``"<path>.<key>: <what is wrong>"``.
    """
    raw = _section(path, {} if cfg is None else cfg, _KEYS[""])
    try:
        lo, hi = _domain_tensors(domain)
        dims = lo.shape[0]
        coord_axis = _coord_axis(dims, coord_axis)
    except ValueError as e:
        raise DetectorConfigError(path, str(e)) from None
    effects: list[nn.Module] = []

    resolution = _num(f"{path}.resolution", raw.get("resolution", 0.0))
    if not 0 <= resolution <= 0.5:
        raise DetectorConfigError(f"{path}.resolution", f"must be in [0, 0.5], got {resolution:g}")
    smearing = ResolutionSmearing(resolution)

    if "surrogate" in raw:
        p = f"{path}.surrogate"
        s = _section(p, raw["surrogate"], _KEYS["surrogate"])
        if resolution == 0:
            raise DetectorConfigError(p, "needs detector.resolution > 0 to learn the smearing from")
        n_events = _int(f"{p}.events", s.get("events", 100_000), 1000)
        epochs = _int(f"{p}.epochs", s.get("epochs", 20), 1)
        components = _int(f"{p}.components", s.get("components", 3), 1)
        if components > 16:
            raise DetectorConfigError(f"{p}.components", f"must be at most 16, got {components}")
        hidden = _int(f"{p}.hidden", s.get("hidden", 64), 4)
        if hidden > 512:
            raise DetectorConfigError(f"{p}.hidden", f"must be at most 512, got {hidden}")
        seed = _int(f"{p}.seed", s.get("seed", 0), 0)
        effects.append(smearing if validate_only else
            SurrogateSmearing.train_from(
                smearing,
                list(zip(lo.tolist(), hi.tolist())),
                events=n_events,
                epochs=epochs,
                components=components,
                hidden=hidden,
                coord_axis=coord_axis,
                generator=torch.Generator().manual_seed(seed),
            )
        )
    elif resolution > 0:
        effects.append(smearing)

    if "acceptance" in raw:
        p = f"{path}.acceptance"
        a = _section(p, raw["acceptance"], _KEYS["acceptance"])
        turn_on = _nums(f"{p}.turn_on", a["turn_on"], dims) if "turn_on" in a else lo.tolist()
        width = _nums(f"{p}.width", a["width"], dims) if "width" in a else (0.05 * (hi - lo)).tolist()
        for i, w in enumerate(width):
            if w <= 0:
                where = f"{p}.width" + (f"[{i}]" if isinstance(a.get("width"), (list, tuple)) else "")
                raise DetectorConfigError(where, f"must be > 0, got {w:g}")
        eff_max = _num(f"{p}.max", a.get("max", 1.0))
        if not 0 < eff_max <= 1:
            raise DetectorConfigError(f"{p}.max", f"must be in (0, 1], got {eff_max:g}")
        effects.append(Acceptance(turn_on, width, eff_max, dims=dims, coord_axis=coord_axis))

    if "background" in raw:
        p = f"{path}.background"
        b = _section(p, raw["background"], _KEYS["background"])
        fraction = _num(f"{p}.fraction", b.get("fraction", 0.1))
        if not 0 <= fraction < 1:
            raise DetectorConfigError(f"{p}.fraction", f"must be in [0, 1), got {fraction:g}")
        shape = b.get("shape", "uniform")
        if shape not in Background.SHAPES:
            raise DetectorConfigError(f"{p}.shape", f"must be one of {', '.join(Background.SHAPES)}, got {shape!r}")
        if "slope" in b and shape != "exponential":
            raise DetectorConfigError(f"{p}.slope", "only used with shape: exponential")
        slope = _nums(f"{p}.slope", b.get("slope", -1.0), dims)
        if fraction > 0:
            effects.append(Background(list(zip(lo.tolist(), hi.tolist())), fraction, shape, slope, coord_axis))

    return DetectorChain(effects)
