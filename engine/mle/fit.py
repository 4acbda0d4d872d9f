"""The fit: :class:`MLEFit` minimises the NLL of :mod:`engine.mle.likelihood` from several starts and reports its
errors and predictions (:mod:`engine.mle.errors`) as a :class:`~engine.gan.trainer.MemberResult`. The method is
described in :mod:`engine.mle`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.data.histograms import data_counts, histogram_edges
from engine.data.pseudodata import MeasuredData, normalise_weights
from engine.gan.config import MemberResult, TrainingConfig
from engine.mle.errors import ErrorsAndPredictions
from engine.mle.likelihood import _F64
from engine.problems import Problem
from engine.run.sinks import MetricsSink, live_snapshot
from engine.samplers import clustered_grid


class MLEFit(ErrorsAndPredictions):
    """Unbinned maximum-likelihood fit of ``problem`` to ``data``; a drop-in for :class:`GANTrainer`.

    Runs on the CPU (see the module docstring). Arguments are those of :class:`GANTrainer` except
    ``device``. Of ``config`` only ``steps`` (the most L-BFGS iterations per start) and
    ``metrics_every`` are used; one snapshot is logged, at the end.
    ``seed`` seeds the random starts, the QCF draws and the simulated histograms.
    """

    grid_points_1d = 4001
    grid_points_1d_folded = 2001
    grid_points_2d = 257
    grid_points_2d_folded = 385
    fold_sigmas = 6.0  # the folded grid extends this many resolution widths past the domain
    starts = 3  # at most: the middle of the bounds, then seeded random starts until two find the same minimum
    same_minimum = 1e-3  # NLL difference below which two starts found the same minimum
    qcf_draws = (4000, 1000)  # θ draws for the QCF bands, 1D and 2D
    simulated_events = (200_000, 100_000)  # events per observable for hist_gen and χ²/ndf, 1D and 2D
    tolerance_grad = 1e-7
    tolerance_change = 1e-10

    def __init__(
        self,
        problem: Problem,
        data: MeasuredData,
        config: TrainingConfig,
        resolution: float = 0.0,
        seed: int = 0,
        qcf_grids: tuple[Tensor, ...] | None = None,
        bounds: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.problem = problem
        self.config = config
        self.resolution = float(resolution)
        self.seed = int(seed)
        self.rng = torch.Generator().manual_seed(self.seed)
        lo, hi = bounds if bounds is not None else problem.bounds()
        self.lo = torch.as_tensor(lo, dtype=_F64)
        self.hi = torch.as_tensor(hi, dtype=_F64)
        grids = qcf_grids if qcf_grids is not None else problem.qcf_grids()
        self.qcf_grids = tuple(torch.as_tensor(g, dtype=_F64) for g in grids)
        self.events = torch.as_tensor(np.asarray(data.events), dtype=_F64)  # (O, N, D)
        self.n_obs, self.n_events = self.events.shape[:2]
        self.xsec = torch.as_tensor(np.asarray(data.xsec), dtype=_F64)
        self.xsec_err = torch.as_tensor(np.asarray(data.xsec_err), dtype=_F64)
        self.use_xsec = bool(problem.normalisation_params)
        w = normalise_weights(data.weights)
        # (O, N) per-event weights of the log-likelihood, mean 1 per observable; None: unweighted
        self.event_w = None if w is None else torch.as_tensor(w, dtype=_F64)
        self.edges = histogram_edges(data.events)
        self.data_counts, self.data_sumw2 = data_counts(data, self.edges)
        self.warnings: list[str] = []
        self.iterations = 0
        self.evaluations = 0
        self.start_results: list[tuple[float, Tensor]] = []  # (NLL, θ) at the end of each start
        self.theta_hat = 0.5 * (self.lo + self.hi)
        self.cov = torch.full((len(self.lo),) * 2, math.nan, dtype=_F64)

        d = problem.event_dims
        folded = self.resolution > 0
        if d == 1:
            n = self.grid_points_1d_folded if folded else self.grid_points_1d
        else:
            n = self.grid_points_2d_folded if folded else self.grid_points_2d
        self.truth_grids = tuple(clustered_grid(a, b, n) for a, b in problem.domain)
        probe = problem.log_density(self.theta_hat[None], self.events[:, :1])
        self.analytic = probe is not None and self.resolution == 0.0
        if not self.analytic:
            self._tabulate()

    # Fit ----------------------------------------------------------------------------------------

    def _start_points(self) -> list[Tensor]:
        p = len(self.lo)
        out = [torch.zeros(p, dtype=_F64)]
        for _ in range(self.starts - 1):
            # Uniform in the middle 60% of each range, in θ.
            s = 0.2 + 0.6 * torch.rand(p, generator=self.rng, dtype=_F64)
            out.append(torch.log(s / (1.0 - s)))
        return out

    def _minimum_confirmed(self) -> bool:
        """Whether two starts reached the same lowest minimum (NLL within ``same_minimum``)."""
        nlls = sorted(v for v, _ in self.start_results)
        return len(nlls) >= 2 and nlls[1] - nlls[0] < self.same_minimum

    def _minimise(self, u0: Tensor, chunk: int, after_chunk: Callable[[Tensor, int], bool]) -> tuple[Tensor, bool]:
        """L-BFGS from ``u0`` in chunks of ``chunk`` iterations, at most ``config.steps`` in all.

        ``after_chunk(u, iterations)`` runs after every chunk and returns ``True`` to stop. Returns
        the final ``u`` and whether L-BFGS converged (stopped on its tolerances).
        """
        u = u0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [u],
            lr=1.0,
            max_iter=chunk,
            max_eval=25 * chunk,
            history_size=20,
            tolerance_grad=self.tolerance_grad,
            tolerance_change=self.tolerance_change,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            opt.zero_grad()
            loss = self.nll(self.theta_of(u))
            loss.backward()
            self.evaluations += 1
            return loss

        done = 0
        while done < self.config.steps:
            before = opt.state[u].get("n_iter", 0) if u in opt.state else 0
            opt.step(closure)
            it = opt.state[u]["n_iter"] - before
            done += it
            self.iterations += it
            if after_chunk(u.detach(), it):
                return u.detach(), False
            if it < chunk:  # L-BFGS stopped on its tolerances
                return u.detach(), True
        return u.detach(), False

    def fit(
        self,
        member: int,
        sink: MetricsSink,
        stop_requested: Callable[[], bool] = lambda: False,
        stop_check_every: int = 20,
    ) -> MemberResult:
        """Minimise the NLL from each start (at most ``config.steps`` iterations each) and keep the best
        minimum; errors from the Hessian there. The metrics show the best fit so far."""
        t0 = time.perf_counter()
        chunk = max(1, min(self.config.metrics_every, stop_check_every))
        best: dict[str, Any] = {"nll": math.inf, "u": None}
        last_check = [0]
        stopped = [stop_requested()]

        def after_chunk(u: Tensor, iterations: int) -> bool:
            with torch.no_grad():
                value = float(self.nll(self.theta_of(u)))
            self.evaluations += 1
            if value < best["nll"]:
                best.update(nll=value, u=u.clone())
            if iterations > 0:
                metrics = {"nll": best["nll"]}
                theta = self.theta_of(best["u"])
                metrics.update({f"param_{n}": float(v) for n, v in zip(self.problem.param_names, theta)})
                metrics["elapsed"] = time.perf_counter() - t0
                sink.log_metrics(member, self.iterations, metrics)
            if self.iterations - last_check[0] >= stop_check_every:
                last_check[0] = self.iterations
                stopped[0] = stop_requested()
            return stopped[0]

        not_converged = 0
        for u0 in self._start_points():
            if stopped[0] or self._minimum_confirmed():
                break
            u, converged = self._minimise(u0, chunk, after_chunk)
            with torch.no_grad():
                self.start_results.append((float(self.nll(self.theta_of(u))), self.theta_of(u)))
            not_converged += not converged and not stopped[0]
        status = "stopped" if stopped[0] else "completed"
        if not_converged:
            self.warnings.append(
                f"{not_converged} of {len(self.start_results)} starts did not converge "
                f"in {self.config.steps} iterations"
            )
        if best["u"] is not None:
            self.theta_hat = self.theta_of(best["u"])
        elif not stopped[0]:
            raise FloatingPointError("the negative log-likelihood was never finite during the fit")
        self._errors()
        wall = time.perf_counter() - t0
        p = self.predict()
        sink.log_snapshot(member, self.iterations, self.snapshot())
        return MemberResult(
            member=member,
            status=status,
            steps_done=self.iterations,
            wall_seconds=wall,
            events_processed=self.evaluations * self.n_obs * self.n_events,
            metrics={},  # filled from a HistorySink by the caller
            params_pred=p["params_mean"],
            params_pred_std=p["params_std"],
            qcf_pred=p["qcf_mean"],
            qcf_pred_std=p["qcf_std"],
            hist_gen=p["hist_gen"],
            chi2_ndf=p["chi2_ndf"],
            error="; ".join(self.warnings),
            params_draws=p.get("params_draws"),
        )

    def snapshot(self) -> dict[str, Any]:
        """The GAN's live-plot view (:func:`~engine.run.sinks.live_snapshot`): the same keys from the same
        predict() outputs."""
        return live_snapshot(self)
