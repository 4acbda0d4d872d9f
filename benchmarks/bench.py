"""``qcf-studio bench sampler|gan``: throughput of the differentiable sampler and of full GAN steps, in this
process. (``bench ensemble|dp`` and ``gan --members``, whole runs and steps on Dask workers, are in
``qcf_studio.benchmarks.scaleout``; ``bench campaign`` in ``qcf_studio.benchmarks.campaign``;
``qcf_studio.benchmarks.cli`` picks one.)

Both report medians over repeated timings after a warm-up, on the threads torch is given
(``--threads``, default 1: one Dask worker's share) and the device ``--device`` (``cpu`` or
``cuda``; on CUDA each timing waits for the GPU to finish). Counting rules:

- sampler: events drawn per second, forward (theory → tabulated densities → events) plus backward
  to the parameters, for a batch of parameter sets from the generator's bounds.
- gan: generated events per second through complete training steps (generation, discriminator
  step on as many real events, generator step). ``--events`` is the generated events per step,
  summed over observables.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.gan.trainer import GANTrainer, TrainingConfig
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.problems.base import Problem
from qcf_studio.engine.samplers import SAMPLERS

__all__ = ["bench_sampler", "bench_gan", "bench_data", "gan_batch", "gan_trainer", "disc_label"]


def _timings(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 3) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls (until the GPU is done, on CUDA)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def bench_sampler(
    kind: str,
    events: int,
    batch: int = 64,
    grid_points: int | None = None,
    repeats: int = 20,
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Differentiable sampler, forward (θ → observables on the grid → events) + backward to θ.

    1D problems use ``inverse_cdf_1d``, 2D problems (``problem.event_dims == 2``) ``loits_2d``;
    ``grid_points`` per axis defaults to the problem's own (512 for proxy1d, 64 clustered for proxy2d).
    ``events`` is split over ``batch`` parameter sets × observables.
    """
    problem = get_problem(kind)
    dims = getattr(problem, "event_dims", 1)
    sampler = SAMPLERS["inverse_cdf_1d" if dims == 1 else "loits_2d"]
    points = grid_points or getattr(problem, "grid_points", 512)
    grids = problem.tabulation_grids(points) if hasattr(problem, "tabulation_grids") else (problem.grid(points),)
    grids = tuple(g.to(device) for g in grids)
    lo, hi = problem.bounds()
    gen = torch.Generator().manual_seed(0)
    theta0 = (lo + (hi - lo) * (0.25 + 0.5 * torch.rand((batch, lo.shape[0]), generator=gen))).to(device)
    n_obs = len(problem.observable_names)
    per_row = max(1, events // (batch * n_obs))
    uniforms = torch.rand((batch * n_obs, per_row, sampler.n_uniforms(dims)), generator=gen).to(device)

    def step() -> None:
        theta = theta0.clone().requires_grad_(True)
        density = problem.observables(theta, *grids)
        x, integral = sampler.sample(density.reshape(batch * n_obs, *density.shape[2:]), grids, uniforms)
        (x.sum() + integral.sum()).backward()

    times = _timings(step, repeats, device)
    seconds = statistics.median(times)
    n = batch * n_obs * per_row
    return {
        "bench": "sampler",
        "problem": kind,
        "sampler": sampler.name,
        "events": n,
        "batch": batch,
        "grid_points": [points] * dims,
        "grid_spacing": getattr(problem, "grid_spacing", "uniform"),
        "median_seconds": seconds,
        "events_per_second": n / seconds,
        "min_seconds": min(times),
        "events_per_second_best": n / min(times),
    }


def _pass_block(accelerator: str, device: torch.device) -> str:
    """How the discriminator pass's blocks ran (see :func:`bench_gan`)."""
    if accelerator == "plain":
        return "autograd"
    from qcf_studio.engine.accel import pass_block_kind

    return pass_block_kind() if device.type == "cpu" else "python"  # off the CPU: the Python block


def bench_gan(
    kind: str,
    events: int,
    width: int = 64,
    depth: int = 2,
    repeats: int = 20,
    batch_params: int | None = None,
    edge_features: bool | None = False,
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Seconds per full GAN training step and the analysis rates they give.

    A step is what :meth:`GANTrainer.train_step` does: generation (generator → theory on the
    tabulation grid → sampler → detector), the discriminator update on as many real events as
    generated ones, and the generator update. Counting:

    - ``events_per_second``: generated events per step (``--events``, summed over observables)
      divided by the median seconds per step.
    - ``events_analysed_per_second``: rows through the discriminator per step (generated + real,
      i.e. twice the above) divided by the same seconds.
    - ``accelerator``: which path ran (:mod:`qcf_studio.engine.gan.accelerator`): ``plain`` (autograd; ``QCF_ACCEL=0``)
      or ``accel (...)`` with how the discriminator pass ran.
    - ``pass_threads``: helper threads of the discriminator pass (``--threads`` − 1 on the CPU; see
      :class:`~qcf_studio.engine.accel.threads.PassThreads`).
    - ``pass_block``: how its blocks ran: ``native`` (C++, :mod:`qcf_studio.engine.accel.native`), ``torchscript``,
      ``python``, or ``autograd`` on the plain path.

    The headline figures use the reference discriminator: event coordinates (plus a one-hot
    observable label with several observables) → ``width`` × ``depth`` → 1, i.e. 2-64-64-1 for
    ``proxy2d`` (``edge_features=False``). The ``*_problem_disc`` figures repeat the measurement
    with the discriminator the problem trains with by default (log-distance edge features and a
    network per observable where the problem uses them). 2D problems draw fewer parameter sets per
    step (16 rather than 64): their theory is tabulated on a 2D grid per parameter set.
    """
    problem = get_problem(kind)
    data = bench_data(problem)
    batch, per_param, n = gan_batch(problem, events, batch_params)

    speed: dict[str, Any] = {}

    def measure(edges: bool | None) -> tuple[str, list[float]]:
        trainer = gan_trainer(problem, data, events, width, depth, edges, batch_params, device)
        speed.update(accelerator=trainer.accelerator.name, pass_threads=trainer.accelerator.helpers)
        return disc_label(trainer, width, depth), _timings(trainer.train_step, repeats, device)

    disc, times = measure(edge_features)
    seconds = statistics.median(times)
    out: dict[str, Any] = {
        "bench": "gan",
        "problem": kind,
        "events": n,
        "batch_params": batch,
        "events_per_param": per_param,
        "grid_points": problem.grid_points,
        "grid_spacing": problem.grid_spacing,
        "disc": disc,
        "disc_width": width,
        "disc_depth": depth,
        **speed,
        "pass_block": _pass_block(speed["accelerator"], device),
        "median_seconds": seconds,
        "min_seconds": min(times),
        "events_per_second": n / seconds,
        "events_analysed_per_second": 2 * n / seconds,
    }
    if edge_features is not None and (edge_features != problem.edge_features or problem.disc_per_observable):
        disc, times = measure(None)
        seconds = statistics.median(times)
        out.update(
            {
                "disc_problem": disc,
                "median_seconds_problem_disc": seconds,
                "events_per_second_problem_disc": n / seconds,
                "events_analysed_per_second_problem_disc": 2 * n / seconds,
            }
        )
    return out


def bench_data(problem: Problem) -> MeasuredData:
    """The measured events the GAN benchmarks train on: 100 000 per observable at the truth."""
    return make_pseudo_data(problem, np.asarray(problem.truth), 100_000, seed=1)


def gan_batch(problem: Problem, events: int, batch_params: int | None = None) -> tuple[int, int, int]:
    """``(parameter sets, events per set and observable, generated events)`` of a benchmark step.

    2D problems draw fewer parameter sets per step (16 rather than 64): their theory is tabulated
    on a 2D grid per parameter set.
    """
    n_obs = len(problem.observable_names)
    batch = batch_params or (64 if problem.event_dims == 1 else 16)
    per_param = max(1, events // (batch * n_obs))
    return batch, per_param, batch * per_param * n_obs


def gan_trainer(
    problem: Problem,
    data: MeasuredData,
    events: int,
    width: int = 64,
    depth: int = 2,
    edge_features: bool | None = False,
    batch_params: int | None = None,
    device: torch.device = torch.device("cpu"),
) -> GANTrainer:
    """The trainer a GAN benchmark times; ``edge_features=None`` takes the problem's own
    discriminator (its edge features and networks per observable), anything else the reference one
    network on the event coordinates."""
    batch, per_param, _ = gan_batch(problem, events, batch_params)
    config = TrainingConfig(
        steps=10_000,
        batch_params=batch,
        events_per_param=per_param,
        disc_width=width,
        disc_depth=depth,
        disc_edge_features=edge_features,
        disc_per_observable=None if edge_features is None else False,  # the reference: one network
    )
    return GANTrainer(problem, data, config, seed=0, device=device)


def disc_label(trainer: GANTrainer, width: int, depth: int) -> str:
    """The discriminator's layer sizes, e.g. ``2-64-64-1`` or ``4 × 6-64-64-1``."""
    nets = trainer.discriminator.networks
    layers = "-".join(map(str, [nets[0][0].in_features] + [width] * depth + [1]))
    return f"{len(nets)} × {layers}" if len(nets) > 1 else layers
