"""GAN training of one ensemble member: generator → θ → observables → sampler → detector → events.

The measured data enter twice: their events are judged against generated events by the event
discriminator, and their integrated cross sections fix the normalisations that event shapes
alone cannot. The cross sections are judged adversarially too: a small second discriminator
compares the generated cross sections' pulls ``(σ_tot(θ) − σ_meas)/δσ`` with draws from the
measurement's Gaussian error, so their spread is calibrated to the statistical error and their
gradient stays bounded next to the event discriminator's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.detector import ResolutionSmearing
from engine.models import Discriminator, Generator, mlp
from engine.problems import Problem
from engine.pseudodata import MeasuredData
from engine.samplers import cumulative_trapezoid, sample_inverse_cdf
from engine.sinks import MetricsSink

__all__ = ["TrainingConfig", "GANTrainer", "MemberResult", "histogram_edges", "density_histograms", "data_histograms",
           "HIST_BINS"]


@dataclass
class TrainingConfig:
    """Hyperparameters of GAN training (the ``training`` section of a spec, less ``method``)."""

    steps: int = 1500
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    lr_final: float = 0.1  # learning rates decay exponentially to this fraction by the last step
    batch_params: int = 64  # parameter sets drawn from the generator per step
    events_per_param: int = 64  # events per observable per parameter set
    noise_dim: int = 8
    gen_width: int = 64
    gen_depth: int = 2
    disc_width: int = 64
    disc_depth: int = 2
    grid_points: int = 512  # tabulation grid of the differentiable sampler
    xsec_weight: float = 1.0  # weight of the cross-section discriminator in the generator loss
    xsec_start: float = 0.3  # fraction of the steps fitted on event shapes alone before ...
    xsec_ramp: float = 0.2  # ... the cross-section weight ramps up linearly over this fraction
    metrics_every: int = 10
    snapshot_every: int = 100

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class MemberResult:
    """What one ensemble member produced, as plain arrays (cheap to ship from a Dask worker)."""

    member: int
    status: str
    steps_done: int
    wall_seconds: float
    events_processed: int
    metrics: dict[str, list[float]]
    params_pred: np.ndarray
    params_pred_std: np.ndarray
    qcf_pred: np.ndarray
    qcf_pred_std: np.ndarray
    hist_gen: np.ndarray
    error: str = ""


HIST_BINS = 40


def histogram_edges(data: MeasuredData, bins: int = HIST_BINS) -> np.ndarray:
    """Common bin edges for data and generated histograms, shape ``(O, bins + 1)``."""
    lo = np.percentile(data.events, 0.01, axis=1)
    hi = np.percentile(data.events, 99.99, axis=1)
    return np.stack([np.linspace(a, b, bins + 1) for a, b in zip(lo, hi)])


def data_histograms(data: MeasuredData) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges ``(O, bins + 1)`` and normalised histograms ``(O, bins)`` of the measured events."""
    edges = histogram_edges(data)
    return edges, density_histograms(data.events, edges)


def density_histograms(events: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Normalised histograms of ``events (O, N)`` in ``edges (O, bins + 1)``: shape ``(O, bins)``."""
    out = []
    for e, ed in zip(events, edges):
        counts, _ = np.histogram(e, bins=ed)
        out.append(counts / max(counts.sum(), 1) / np.diff(ed))
    return np.stack(out)


class GANTrainer:
    """Trains one generator/discriminator pair on measured data.

    Arguments:
        problem: the proxy problem (theory).
        data: measured events and integrated cross sections.
        config: hyperparameters.
        resolution: detector resolution applied to generated events.
        seed: seeds weights, noise and data batches; distinct per ensemble member.
        qcf_x: points where QCFs are reported.
        bounds: lower and upper bounds of the generator's output (the problem's by default).
    """

    def __init__(
        self,
        problem: Problem,
        data: MeasuredData,
        config: TrainingConfig,
        resolution: float = 0.0,
        seed: int = 0,
        qcf_x: Tensor | None = None,
        bounds: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.problem = problem
        self.config = c = config
        torch.manual_seed(seed)
        self.rng = torch.Generator().manual_seed(seed)
        lo, hi = bounds if bounds is not None else problem.bounds()
        self.generator = Generator(lo, hi, c.noise_dim, c.gen_width, c.gen_depth)
        n_obs = len(problem.observable_names)
        self.discriminator = Discriminator(n_obs, problem.x_range, c.disc_width, c.disc_depth)
        self.xsec_discriminator = mlp(n_obs, 32, 2, 1)
        self.detector = ResolutionSmearing(resolution)
        self.grid = problem.grid(c.grid_points)
        self.qcf_x = qcf_x if qcf_x is not None else problem.grid(181)
        self.real = torch.as_tensor(data.events, dtype=torch.float32)
        self.xsec = torch.as_tensor(data.xsec, dtype=torch.float32)
        self.xsec_err = torch.as_tensor(data.xsec_err, dtype=torch.float32)
        self.edges = histogram_edges(data)
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=betas)
        self.d_params = [*self.discriminator.parameters(), *self.xsec_discriminator.parameters()]
        self.opt_d = torch.optim.Adam(self.d_params, lr=c.lr_d, betas=betas)
        gamma = c.lr_final ** (1.0 / max(c.steps, 1))
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma)
        n_gen = c.batch_params * c.events_per_param
        self.labels = torch.arange(n_obs).repeat_interleave(n_gen)
        self.bce = nn.BCEWithLogitsLoss()
        names = problem.normalisation_params
        self.norm_mask = torch.tensor([n in names for n in problem.param_names]) if names else None
        self.step = 0

    @property
    def events_per_step(self) -> int:
        """Events analysed by the discriminator per step (real + generated, all observables)."""
        return 2 * self.labels.shape[0]

    def generate(self, n_params: int, events_per_param: int) -> tuple[Tensor, Tensor, Tensor]:
        """Parameter sets, detector-level events ``(O, n_params * events_per_param)`` and cross sections ``(B, O)``."""
        theta = self.generator.sample(n_params, generator=self.rng)
        density = self.problem.observables(theta, self.grid)  # (B, O, G)
        b, o, g = density.shape
        uniforms = torch.rand((b * o, events_per_param), generator=self.rng)
        x, xsec = sample_inverse_cdf(density.reshape(b * o, g), self.grid, uniforms)
        x = self.detector(x.reshape(b, o, events_per_param), generator=self.rng)
        if self.norm_mask is not None and torch.is_grad_enabled():
            # Cross sections steer only the normalisations: the shape parameters enter detached.
            theta_n = torch.where(self.norm_mask, theta, theta.detach())
            xsec = cumulative_trapezoid(self.problem.observables(theta_n, self.grid), self.grid)[..., -1]
        return theta, x.permute(1, 0, 2).reshape(o, -1), xsec.reshape(b, o)

    def _real_batch(self, n: int) -> Tensor:
        idx = torch.randint(0, self.real.shape[1], (self.real.shape[0], n), generator=self.rng)
        return torch.gather(self.real, 1, idx)

    def _freeze_discriminators(self, frozen: bool) -> None:
        for p in self.d_params:
            p.requires_grad_(not frozen)

    def xsec_weight(self) -> float:
        """Cross-section weight at the current step: shapes settle first, then normalisations."""
        c = self.config
        ramp = (self.step / max(c.steps, 1) - c.xsec_start) / max(c.xsec_ramp, 1e-9)
        return c.xsec_weight * min(max(ramp, 0.0), 1.0)

    def _xsec_logits(self, xsec: Tensor) -> Tensor:
        # asinh keeps early pulls of hundreds on a scale the network handles, and is linear near 0.
        pull = (xsec - self.xsec) / self.xsec_err
        return self.xsec_discriminator(torch.asinh(pull)).squeeze(-1)

    def train_step(self) -> dict[str, float]:
        c = self.config
        theta, fake, xsec = self.generate(c.batch_params, c.events_per_param)
        real = self._real_batch(fake.shape[1])
        n = self.labels.shape[0]
        both_labels = torch.cat([self.labels, self.labels])
        target_d = torch.cat([torch.ones(n), torch.zeros(n)])
        xsec_real = self.xsec + self.xsec_err * torch.randn(xsec.shape, generator=self.rng)
        target_x = torch.cat([torch.ones(xsec.shape[0]), torch.zeros(xsec.shape[0])])

        # Discriminator step: real and (detached) generated events in one pass.
        logits = self.discriminator(torch.cat([real.reshape(-1), fake.detach().reshape(-1)]), both_labels)
        logits_x = self._xsec_logits(torch.cat([xsec_real, xsec.detach()]))
        loss_d = 2.0 * self.bce(logits, target_d)  # sum of the real and fake BCEs: ln 4 at equilibrium
        loss_d_xsec = 2.0 * self.bce(logits_x, target_x)
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d + loss_d_xsec).backward()
        self.opt_d.step()

        # Generator step: non-saturating loss against both discriminators. The discriminators are
        # frozen for it, so the backward pass skips their weight gradients (unused here).
        self._freeze_discriminators(True)
        logits_gen = self.discriminator(fake.reshape(-1), self.labels)
        loss_adv = self.bce(logits_gen, target_d[:n])
        loss_xsec = self.bce(self._xsec_logits(xsec), target_x[: xsec.shape[0]])
        loss_g = loss_adv + self.xsec_weight() * loss_xsec
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._freeze_discriminators(False)
        self.opt_g.step()
        self.sched_g.step()
        self.sched_d.step()
        self.step += 1

        logits_real, logits_fake = logits[:n].detach(), logits[n:].detach()
        with torch.no_grad():
            acc_real = (logits_real > 0).float().mean()
            acc_fake = (logits_fake < 0).float().mean()
            mean = theta.mean(0)
        metrics = {
            "loss_g": float(loss_adv.detach()),
            "loss_d": float(loss_d.detach()),
            "loss_xsec": float(loss_xsec.detach()),
            "loss_d_xsec": float(loss_d_xsec.detach()),
            "d_acc_real": float(acc_real),
            "d_acc_fake": float(acc_fake),
        }
        metrics.update({f"param_{n}": float(v) for n, v in zip(self.problem.param_names, mean)})
        return metrics

    @torch.no_grad()
    def predict(self, n_params: int = 2000, events_per_param: int = 50) -> dict[str, np.ndarray]:
        """Parameter mean/std, QCF mean/std/quantile band and generated histograms."""
        theta = self.generator.sample(n_params, generator=self.rng)
        q = self.problem.qcfs(theta, self.qcf_x)  # (B, Q, X)
        lo, hi = torch.quantile(q, torch.tensor([0.16, 0.84]), dim=0)
        _, events, _ = self.generate(n_params, events_per_param)
        hist = density_histograms(events.numpy(), self.edges)
        return {
            "params_mean": theta.mean(0).numpy(),
            "params_std": theta.std(0).numpy(),
            "qcf_mean": q.mean(0).numpy(),
            "qcf_std": q.std(0).numpy(),
            "qcf_lo": lo.numpy(),
            "qcf_hi": hi.numpy(),
            "hist_gen": hist,
        }

    def snapshot(self) -> dict[str, Any]:
        """A compact, JSON-friendly view of the current state for live plots."""
        p = self.predict(n_params=400, events_per_param=25)
        return {"x": self.qcf_x.tolist(), **{k: v.tolist() for k, v in p.items()}}

    def fit(
        self,
        member: int,
        sink: MetricsSink,
        stop_requested: Callable[[], bool] = lambda: False,
        stop_check_every: int = 20,  # each check of a Dask Event is a scheduler round trip
    ) -> MemberResult:
        """Train to ``config.steps`` or until ``stop_requested()``; return what was produced."""
        c = self.config
        t0 = time.perf_counter()
        status = "completed"
        while self.step < c.steps:
            if self.step % stop_check_every == 0 and stop_requested():
                status = "stopped"
                break
            metrics = self.train_step()
            if self.step % c.metrics_every == 0 or self.step == c.steps:
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(f"non-finite metrics at step {self.step}: {metrics}")
                metrics["elapsed"] = time.perf_counter() - t0
                sink.log_metrics(member, self.step, metrics)
            if self.step % c.snapshot_every == 0 or self.step == c.steps:
                sink.log_snapshot(member, self.step, self.snapshot())
        wall = time.perf_counter() - t0
        p = self.predict()
        return MemberResult(
            member=member,
            status=status,
            steps_done=self.step,
            wall_seconds=wall,
            events_processed=self.step * self.events_per_step,
            metrics={},  # filled from a HistorySink by the caller
            params_pred=p["params_mean"],
            params_pred_std=p["params_std"],
            qcf_pred=p["qcf_mean"],
            qcf_pred_std=p["qcf_std"],
            hist_gen=p["hist_gen"],
        )
