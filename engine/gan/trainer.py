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
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qcf_studio.engine.data.histograms import (
    chi2_per_ndf,
    data_counts,
    data_edges,
    density_histograms,
    histogram_counts,
)
from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.detector import DetectorChain, ResolutionSmearing
from qcf_studio.engine.gan.accelerator import Accelerator, make_accelerator
from qcf_studio.engine.gan.config import PARAM_DRAWS, MemberResult, TrainingConfig
from qcf_studio.engine.gan.models import Discriminator, Generator, mlp
from qcf_studio.engine.problems import Problem
from qcf_studio.engine.run.parallel import GradientSharing
from qcf_studio.engine.run.sinks import MetricsSink, live_snapshot

__all__ = ["TrainingConfig", "GANTrainer", "MemberResult"]


NOISE_SHRINK_FRACTION = 0.25  # of the steps, over which the generator's noise goes to noise_final
REAL_BATCH_SEED_OFFSET = 7919  # the measured-event batches' random stream: seed + this


class GANTrainer:
    """Trains one generator/discriminator pair on measured data.

    Arguments:
        problem: the proxy problem (theory).
        data: measured events and integrated cross sections.
        config: hyperparameters.
        resolution: detector resolution applied to generated events (when no ``detector`` is given).
        seed: seeds weights, noise and data batches; distinct per ensemble member.
        qcf_grids: where QCFs are reported (the problem's :meth:`~Problem.qcf_grids` by default).
        bounds: lower and upper bounds of the generator's output (the problem's by default).
        detector: the detector chain applied to generated events (smearing, acceptance weights,
            background); replaces ``resolution``.
        shard: ``(rank, ranks)`` of data-parallel training: this trainer's discriminator sees every
            ``ranks``-th measured event from ``rank`` on; histograms and χ² still use all of them.
        device: where every tensor of training lives (networks, measured events, grids, random
            stream); :meth:`predict` and :meth:`snapshot` return CPU arrays and lists.
        pass_threads: run the discriminator's pass on helper threads while the generator works
            (:class:`~qcf_studio.engine.accel.threads.PassThreads`): by default on the CPU when torch has more
            than one thread here (``torch.get_num_threads()`` when the trainer is made), with
            ``T − 1`` helpers for ``T`` threads; the results are the same up to the order of
            floating-point sums. How a step runs is :attr:`accelerator`'s business
            (:func:`~qcf_studio.engine.gan.accelerator.make_accelerator`: ``QCF_ACCEL=0`` for the plain path).

    Observables (data sets) may have different numbers of events (``data.counts``): each step draws the
    same number of real events from each, uniformly from its own.

    Weighted measured data (``data.weights``): each real event's term in the discriminator loss is
    multiplied by its weight, normalised to mean 1 per observable over the events this trainer sees
    (:meth:`~qcf_studio.engine.data.pseudodata.MeasuredData.normalised_weights`; so a batch's real term estimates the
    weighted expectation without bias); the data histograms and χ²/ndf use weighted counts with
    sum-of-squared-weights variances. The cross sections are the file's, as given. Negative weights
    (sWeights) are refused: a real term ``−w log D(x)`` with ``w < 0`` is unbounded below, so the
    discriminator could win by driving ``D`` to 0 at such events rather than by telling data from model.

    Set :attr:`sharing` (a :class:`~qcf_studio.engine.run.parallel.GradientSharing`) to share the generator's
    gradients with other ranks.
    """

    def __init__(
        self,
        problem: Problem,
        data: MeasuredData,
        config: TrainingConfig,
        resolution: float = 0.0,
        seed: int = 0,
        qcf_grids: tuple[Tensor, ...] | None = None,
        bounds: tuple[Tensor, Tensor] | None = None,
        detector: DetectorChain | None = None,
        shard: tuple[int, int] | None = None,
        device: torch.device | str = "cpu",
        pass_threads: bool | None = None,
    ) -> None:
        self.problem = problem
        self.config = c = config
        self.device = dev = torch.device(device)
        torch.manual_seed(seed)  # the networks are initialised on the CPU, so alike on every device
        self.rng = torch.Generator(device=dev).manual_seed(seed)
        # The measured events' batches draw from a stream of their own, so that drawing the next one
        # early (pass threads) changes nothing else.
        self.real_rng = torch.Generator(device=dev).manual_seed(seed + REAL_BATCH_SEED_OFFSET)
        lo, hi = bounds if bounds is not None else problem.bounds()
        self.generator = Generator(lo, hi, c.noise_dim, c.gen_width, c.gen_depth).to(dev)
        n_obs = len(problem.observable_names)
        edge = problem.edge_features if c.disc_edge_features is None else c.disc_edge_features
        per_obs = problem.disc_per_observable if c.disc_per_observable is None else c.disc_per_observable
        self.discriminator = Discriminator(
            n_obs, problem.domain, c.disc_width, c.disc_depth, edge, per_observable=per_obs
        ).to(dev)
        names = problem.normalisation_params
        # Cross sections steer only the normalisation parameters; problems without any ignore them.
        self.norm_mask = torch.tensor([n in names for n in problem.param_names], device=dev) if names else None
        self.xsec_discriminator = mlp(n_obs, 32, 2, 1).to(dev) if names else None
        detector = detector if detector is not None else DetectorChain([ResolutionSmearing(resolution)])
        self.detector = detector.to(dev)
        self.grids = tuple(
            g.to(dev)
            for g in problem.tabulation_grids(
                c.grid_points or None, spacing=None if c.grid_spacing == "auto" else c.grid_spacing
            )
        )
        grids = qcf_grids if qcf_grids is not None else problem.qcf_grids()
        self.qcf_grids = tuple(g.to(dev, torch.float32) for g in grids)
        if data.negative_weights:  # validation refuses such a spec (engine.data.datafiles.read_spec_data)
            raise ValueError("the GAN cannot use negative event weights (sWeights); fit them with method mle")
        part = data if shard is None else data.shard(*shard)
        self.real = torch.as_tensor(part.events, dtype=torch.float32, device=dev)  # (O, N, D)
        # Events per observable when they differ (the rows past them are padding, never drawn); None: all N.
        self.real_counts = None if part.counts is None else torch.as_tensor(part.counts, device=dev)
        weights = part.normalised_weights()
        # (O, N) real-event weights of the discriminator loss, mean 1 per observable; None: unweighted
        self.real_weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=dev)
        if not edge:
            # Gaussian-tailed observables: z-scored positions (a data set may be a sliver of the domain).
            # Not with edge features: z-scoring the log-distances made proxy1d's Nu run to its bound.
            self.discriminator.standardise_to(self.real, self.real_counts)
        with torch.no_grad():  # the measured events' features, once: a real batch is a gather of rows
            o, total, d = self.real.shape
            obs = torch.arange(o, device=dev).repeat_interleave(total)
            self.real_features = self.discriminator.features(self.real.reshape(-1, d), obs).reshape(o, total, -1)
        self.xsec = torch.as_tensor(data.xsec, dtype=torch.float32, device=dev)
        self.xsec_err = torch.as_tensor(data.xsec_err, dtype=torch.float32, device=dev)
        self.edges = data_edges(data)
        self.data_counts, self.data_sumw2 = data_counts(data, self.edges)
        self.accelerator: Accelerator = make_accelerator(
            self.discriminator, self._real_batch, self.real_rng, dev, pass_threads
        )
        betas = (0.5, 0.999)
        self.generator_params = list(self.generator.parameters())
        self.opt_g = self.accelerator.optimizer(self.generator_params, c.lr_g, betas)
        self.d_params = list(self.discriminator.parameters())
        if self.xsec_discriminator is not None:
            self.d_params += list(self.xsec_discriminator.parameters())
        self.opt_d = self.accelerator.optimizer(self.d_params, c.lr_d, betas)
        gamma = c.lr_final ** (1.0 / max(c.steps, 1))
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma)
        n_gen = c.batch_params * c.events_per_param
        self.labels = torch.arange(n_obs, device=dev).repeat_interleave(n_gen)
        self.step = 0
        self.sharing: GradientSharing | None = None
        self.elapsed_offset = 0.0  # seconds trained before a restart from a checkpoint
        # Sum and count of the generator's mean parameters over the averaging window (average_last).
        self.param_sum = torch.zeros(len(problem.param_names), dtype=torch.float64, device=dev)
        self.param_count = 0

    @property
    def events_per_step(self) -> int:
        """Events analysed by the discriminator per step (real + generated, all observables)."""
        return 2 * self.labels.shape[0]

    def noise_scale(self) -> float:
        """The generator's noise scale at the current step: from 1 at the start linearly to
        ``noise_final`` at a quarter of the steps, then constant.

        A generator with spread produces a mixture of parameter sets, and a mixture can match the
        data with a shifted mean: proxy2d's coupling p4 settled at 1.0-1.2 (truth 0.75) with the
        spread, at 0.80-0.85 without it (the likelihood fit: 0.74 ± 0.15). Three quarters of the
        steps are left to leave where the mixture led.
        """
        c = self.config
        f = min(self.step / max(c.steps, 1) / NOISE_SHRINK_FRACTION, 1.0)
        return 1.0 + (c.noise_final - 1.0) * f

    def point_estimate(self) -> Tensor | None:
        """The mean of the generator's mean parameters over the averaging window (``average_last``) so
        far, ``(P,)``; ``None`` before the window or without one."""
        return None if self.param_count == 0 else (self.param_sum / self.param_count).to(torch.float32)

    def generate(
        self, n_params: int, events_per_param: int, theta: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Parameter sets ``(B, P)``, detector-level events ``(O, B * n, D)``, cross sections ``(B, O)``
        and per-event weights ``(O, B * n)`` (``None`` without an acceptance).

        The parameter sets are drawn from the generator unless given as ``theta``. The cross
        sections carry gradients only to the normalisation parameters; ``None`` for problems
        without normalisations. With an acceptance they are the visible ones (times the mean
        weight of each parameter set's events, as the pseudo-data's).
        """
        if theta is None:
            theta = self.generator.sample(n_params, generator=self.rng, scale=self.noise_scale())
        if not bool(torch.isfinite(theta).all()):
            raise FloatingPointError(f"non-finite generator output at step {self.step}")
        events, _ = self.problem.simulate(theta, events_per_param, self.rng, self.grids)  # (B, O, n, D)
        events, weights = self.detector(events, None, self.rng)
        b, o, n, d = events.shape
        xsec = None
        if self.norm_mask is not None:
            # The shape parameters enter detached: event shapes steer them, not the cross sections.
            theta_n = torch.where(self.norm_mask, theta, theta.detach())
            xsec = self.problem.cross_sections(theta_n, self.grids)
            if weights is not None:
                xsec = xsec * weights.detach().mean(-1)
        if weights is not None:
            weights = weights.transpose(0, 1).reshape(o, b * n)
        return theta, events.transpose(0, 1).reshape(o, b * n, d), xsec, weights

    def _real_batch(self) -> tuple[Tensor, Tensor | None]:
        """Discriminator features ``(O * n, F)`` of a step's ``n`` measured events per observable (as many
        as it generates), drawn at random, and their normalised weights ``(O * n,)`` (``None`` when unweighted)."""
        n = self.config.batch_params * self.config.events_per_param
        o, total, f = self.real_features.shape
        if self.real_counts is None:
            rows = torch.randint(0, total, (o, n), generator=self.real_rng, device=self.device)
        else:  # each observable draws from its own events (uniformly; floor(u·count) < count)
            u = torch.rand((o, n), generator=self.real_rng, device=self.device, dtype=torch.float64)
            rows = torch.minimum((u * self.real_counts[:, None]).long(), self.real_counts[:, None] - 1)
        idx = (rows + total * torch.arange(o, device=self.device)[:, None]).reshape(-1)
        features = self.real_features.reshape(o * total, f).index_select(0, idx)
        return features, None if self.real_weights is None else self.real_weights.reshape(-1).index_select(0, idx)

    def real_rng_state(self) -> Tensor:
        """The state of the real batches' random stream as of the last completed step: what a checkpoint saves."""
        return self.accelerator.real_rng_state()

    def discard_prefetch(self) -> None:
        """Forget work begun for the next step (its discriminator or batches are about to change)."""
        self.accelerator.discard()

    def xsec_weight(self) -> float:
        """Cross-section weight at the current step: 0 before ``xsec_start``, then ramping up to ``xsec_weight``."""
        c = self.config
        ramp = (self.step / max(c.steps, 1) - c.xsec_start) / max(c.xsec_ramp, 1e-9)
        return c.xsec_weight * min(max(ramp, 0.0), 1.0)

    def train_step(self) -> dict[str, float]:
        """One simultaneous update of the discriminators and the generator; returns the step's metrics.

        The event discriminator judges a batch of measured events against the generated ones: its
        gradients are those of ``BCE(real, 1) + BCE(generated, 0)``, and the generator's loss is the
        non-saturating ``BCE(generated, 1)``, whose gradient autograd carries back through the
        detector, the sampler and the theory to the generator (:mod:`qcf_studio.engine.gan.judging`). Both losses see
        the discriminator as it was before this step. The cross sections are judged alike by their
        own small discriminator. :attr:`accelerator` runs the judging and the updates (faster with
        :mod:`qcf_studio.engine.accel`, the same numbers up to the order of floating-point sums).
        """
        c, speed = self.config, self.accelerator
        with speed.step():
            speed.begin(more=self.step + 1 < c.steps)
            theta, fake, xsec, weights = self.generate(c.batch_params, c.events_per_param)
            n = self.labels.shape[0]
            fake_features = self.discriminator.features(fake.reshape(n, -1), self.labels)
            events = speed.judge_events(fake_features, None if weights is None else weights.reshape(n))
            loss_g = events.loss_g
            metrics = {"loss_g": events.loss_g, "loss_d": events.loss_d}
            logits = events.logits
            metrics["d_acc_real"] = (logits[:n] > 0).float().mean()
            metrics["d_acc_fake"] = (logits[n:] < 0).float().mean()
            if xsec is not None:
                assert self.xsec_discriminator is not None
                # asinh keeps early pulls of hundreds on a scale the network handles, and is linear near 0.
                draws = self.xsec + self.xsec_err * torch.randn(xsec.shape, generator=self.rng, device=self.device)
                pulls = torch.asinh((torch.cat([draws, xsec]) - self.xsec) / self.xsec_err)
                b = xsec.shape[0]
                sigma = speed.judge(self.xsec_discriminator, pulls[:b], pulls[b:])
                metrics["loss_xsec"], metrics["loss_d_xsec"] = sigma.loss_g, sigma.loss_d
                weight = self.xsec_weight()
                if weight > 0:
                    loss_g = loss_g + weight * sigma.loss_g
            # The discriminators step on the gradients of their losses ...
            speed.optimizer_step(self.opt_d)
            self.sched_d.step()
            speed.discriminator_updated()
            # ... and the generator on its loss, as judged by the discriminators before their step.
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward(inputs=self.generator_params)
            if self.sharing is not None:
                self.sharing.average_gradients(self.generator.parameters())
            speed.optimizer_step(self.opt_g)
            self.sched_g.step()
            self.step += 1
            if self.sharing is not None:
                self.sharing.after_step(self.step, self.generator.parameters())

            theta_mean = theta.detach().mean(0)
            if self.step > (1.0 - c.average_last) * c.steps:
                self.param_sum += theta_mean.double()
                self.param_count += 1
            keys = list(metrics) + [f"param_{name}" for name in self.problem.param_names]
            values = torch.cat([torch.stack([v.detach() for v in metrics.values()]), theta_mean]).tolist()
            return dict(zip(keys, values))

    @torch.no_grad()
    def predict(self, n_params: int | None = None, events_per_param: int = 50) -> dict[str, np.ndarray]:
        """Parameter mean/std, QCF mean/std/quantile band, generated histograms and their χ²/ndf vs data
        (CPU arrays).

        Drawn from the generator at its current noise scale; once a collapsed generator
        (``noise_final`` 0) has an averaged :meth:`point_estimate`, everything is evaluated there.
        """
        n_params = n_params or (2000 if self.problem.event_dims == 1 else 400)
        estimate = self.point_estimate()
        collapsed = estimate is not None and self.config.noise_final == 0
        if collapsed and estimate is not None:  # (collapsed implies an estimate)
            theta = estimate.expand(n_params, -1)
        else:
            theta = self.generator.sample(n_params, generator=self.rng, scale=self.noise_scale())
        q = self.problem.qcfs(theta, *self.qcf_grids)  # (B, Q, X[, Y])
        lo, hi = torch.quantile(q.flatten(2), torch.tensor([0.16, 0.84], device=self.device), dim=0)
        # (the histograms' parameter sets are a fresh draw unless collapsed, as they always were)
        _, events, _, weights = self.generate(n_params, events_per_param, theta if collapsed else None)
        ev = events.cpu().numpy()
        w = None if weights is None else weights.cpu().numpy()
        counts = histogram_counts(ev, self.edges, w)
        sumw2 = None if w is None else histogram_counts(ev, self.edges, w * w)
        out = {
            "params_mean": (theta.mean(0) if estimate is None else estimate).cpu().numpy(),
            "params_std": theta.std(0).cpu().numpy(),
            "params_draws": theta[:PARAM_DRAWS].cpu().numpy(),
            "qcf_mean": q.mean(0).cpu().numpy(),
            "qcf_std": q.std(0).cpu().numpy(),
            "qcf_lo": lo.reshape(q.shape[1:]).cpu().numpy(),
            "qcf_hi": hi.reshape(q.shape[1:]).cpu().numpy(),
            "hist_gen": density_histograms(ev, self.edges, w),
            "chi2_ndf": chi2_per_ndf(self.data_counts, counts, sumw2, self.data_sumw2),
        }
        if self.problem.event_dims == 2:
            # Projections onto x (integrated over y) for 1D views of 2D densities.
            y = self.qcf_grids[1]
            proj = torch.trapezoid(q, y, dim=-1)
            plo, phi = torch.quantile(proj, torch.tensor([0.16, 0.84], device=self.device), dim=0)
            out.update(
                {"qcfx_mean": proj.mean(0).cpu().numpy(), "qcfx_lo": plo.cpu().numpy(), "qcfx_hi": phi.cpu().numpy()}
            )
        return out

    def snapshot(self) -> dict[str, Any]:
        """A compact, JSON-friendly view of the current state for live plots (x-projections in 2D)."""
        return live_snapshot(self)

    def fit(
        self,
        member: int,
        sink: MetricsSink,
        stop_requested: Callable[[], bool] = lambda: False,
        stop_check_every: int = 20,  # each check of a Dask Event is a scheduler round trip
        checkpoint: Callable[[GANTrainer], None] | None = None,
        checkpoint_every: int = 0,
    ) -> MemberResult:
        """Train to ``config.steps`` or until ``stop_requested()``; return what was produced.

        ``checkpoint(self)`` is called every ``checkpoint_every`` steps (not after the last). With
        :attr:`sharing` set, all ranks stop at the same step when any rank's ``stop_requested()``.
        """
        c = self.config
        t0 = time.perf_counter() - self.elapsed_offset
        status = "completed"
        while self.step < c.steps:
            if self.step % stop_check_every == 0:
                stop = stop_requested()
                if self.sharing is not None:
                    stop = self.sharing.any(stop)
                if stop:
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
            due = checkpoint_every and self.step % checkpoint_every == 0 and self.step < c.steps
            if checkpoint is not None and due:
                checkpoint(self)
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
            chi2_ndf=p["chi2_ndf"],
            params_draws=p["params_draws"],
        )
