"""``qcf-studio bench sampler|gan``: throughput of the differentiable sampler and of full GAN steps.

Both report medians over repeated timings after a warm-up, on the threads torch is given
(``--threads``, default 1: one Dask worker's share). Counting rules:

- sampler: events drawn per second, forward (theory → tabulated densities → events) plus backward
  to the parameters, for a batch of parameter sets from the generator's bounds.
- gan: generated events per second through complete training steps (generation, discriminator
  step on as many real events, generator step). ``--events`` is the generated events per step,
  summed over observables.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from engine.problems import get_problem
from engine.pseudodata import make_pseudo_data
from engine.samplers import sample_inverse_cdf
from engine.training import GANTrainer, TrainingConfig

__all__ = ["bench_sampler", "bench_gan"]


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_sampler(kind: str, events: int, batch: int = 64, grid_points: int = 512, repeats: int = 20) -> dict[str, Any]:
    problem = get_problem(kind)
    lo, hi = problem.bounds()
    gen = torch.Generator().manual_seed(0)
    theta0 = lo + (hi - lo) * (0.25 + 0.5 * torch.rand((batch, lo.shape[0]), generator=gen))
    grid = problem.grid(grid_points)
    n_obs = len(problem.observable_names)
    per_row = max(1, events // (batch * n_obs))
    uniforms = torch.rand((batch * n_obs, per_row), generator=gen)

    def step() -> None:
        theta = theta0.clone().requires_grad_(True)
        density = problem.observables(theta, grid).reshape(batch * n_obs, -1)
        x, integral = sample_inverse_cdf(density, grid, uniforms)
        (x.sum() + integral.sum()).backward()

    seconds = _median_seconds(step, repeats)
    n = batch * n_obs * per_row
    return {"bench": "sampler", "problem": kind, "events": n, "batch": batch, "grid_points": grid_points,
            "median_seconds": seconds, "events_per_second": n / seconds}


def bench_gan(kind: str, events: int, width: int = 64, depth: int = 2, repeats: int = 20) -> dict[str, Any]:
    problem = get_problem(kind)
    data = make_pseudo_data(problem, np.asarray(problem.truth), 100_000, seed=1)
    n_obs = len(problem.observable_names)
    batch = 64
    per_param = max(1, events // (batch * n_obs))
    config = TrainingConfig(steps=10_000, batch_params=batch, events_per_param=per_param, disc_width=width,
                            disc_depth=depth)
    trainer = GANTrainer(problem, data, config, seed=0)
    seconds = _median_seconds(trainer.train_step, repeats)
    n = batch * per_param * n_obs
    return {"bench": "gan", "problem": kind, "events": n, "disc_width": width, "disc_depth": depth,
            "median_seconds": seconds, "events_per_second": n / seconds,
            "events_analysed_per_second": 2 * n / seconds}


def run(args: Any) -> int:
    torch.set_num_threads(args.threads)
    if args.what == "sampler":
        out = bench_sampler(args.problem, args.events, repeats=args.repeats)
    else:
        out = bench_gan(args.problem, args.events, args.width, args.depth, repeats=args.repeats)
    out.update({"threads": torch.get_num_threads(), "torch": torch.__version__, "device": "cpu"})
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return 0
