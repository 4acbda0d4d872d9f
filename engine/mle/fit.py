"""The fit: :class:`MLEFit` minimises the NLL of :mod:`qcf_studio.engine.mle.likelihood` with MINUIT
(:mod:`qcf_studio.engine.mle.minuit`)
from several starts and reports its errors and predictions (:mod:`qcf_studio.engine.mle.errors`) as a
:class:`~qcf_studio.engine.gan.trainer.MemberResult`. The method is described in :mod:`qcf_studio.engine.mle`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from iminuit import Minuit
from torch import Tensor

from qcf_studio.engine.data.histograms import data_counts, data_edges
from qcf_studio.engine.data.pseudodata import MeasuredData
from qcf_studio.engine.gan.config import MemberResult, TrainingConfig
from qcf_studio.engine.mle.errors import ErrorsAndPredictions
from qcf_studio.engine.mle.likelihood import _F64
from qcf_studio.engine.mle.minuit import FitStopped, MinosInterval, Objective, at_bound, migrad, minos, near_a_bound
from qcf_studio.engine.problems import Problem
from qcf_studio.engine.run.sinks import MetricsSink, live_snapshot
from qcf_studio.engine.samplers import clustered_grid


class MLEFit(ErrorsAndPredictions):
    """Unbinned maximum-likelihood fit of ``problem`` to ``data``; a drop-in for :class:`GANTrainer`.

    Runs on the CPU (see the module docstring). Arguments are those of :class:`GANTrainer` except
    ``device``. Of ``config`` only ``metrics_every`` and ``minos`` (MINOS for every parameter) are used (``steps``
    counts GAN steps: MIGRAD keeps MINUIT's own call limit); one snapshot is logged, at the end.
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
    tolerance = 0.01  # MIGRAD's: it stops at EDM < 0.002 · tolerance · errordef = 1e-5 (shifts of θ̂ ≲ 0.005σ)

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
        self.n_measured = int(data.event_counts.sum())  # events of all observables, without padding
        self.xsec = torch.as_tensor(np.asarray(data.xsec), dtype=_F64)
        self.xsec_err = torch.as_tensor(np.asarray(data.xsec_err), dtype=_F64)
        self.use_xsec = bool(problem.normalisation_params)
        # (O, N) measured events (False: the padding of observables with fewer events); None: all are
        self.valid = None if data.valid is None else torch.as_tensor(data.valid)
        w = data.normalised_weights()
        # (O, N) per-event weights of the log-likelihood, mean 1 per observable (0 on padding); None: unweighted
        self.event_w = None if w is None else torch.as_tensor(w, dtype=_F64)
        self.edges = data_edges(data)
        self.data_counts, self.data_sumw2 = data_counts(data, self.edges)
        self.warnings: list[str] = []
        self.objective = Objective(self.nll)  # counts the NLL's evaluations (calls) and gradients (grads)
        self.start_results: list[tuple[float, Tensor]] = []  # (NLL, θ) at the end of each start
        self.intervals = MinosInterval(np.full((len(self.lo), 2), np.nan), np.zeros(len(self.lo), dtype=bool))
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
        """The middle of the bounds, then points drawn uniformly in the middle 60% of each range."""
        p = len(self.lo)
        out = [0.5 * (self.lo + self.hi)]
        for _ in range(self.starts - 1):
            out.append(self.lo + (0.2 + 0.6 * torch.rand(p, generator=self.rng, dtype=_F64)) * (self.hi - self.lo))
        return out

    def _minimum_confirmed(self) -> bool:
        """Whether two starts reached the same lowest minimum (NLL within ``same_minimum``)."""
        nlls = sorted(v for v, _ in self.start_results)
        return len(nlls) >= 2 and nlls[1] - nlls[0] < self.same_minimum

    def _log(self, sink: MetricsSink, member: int, nll: float, theta: np.ndarray | Tensor, t0: float) -> None:
        metrics = {"nll": nll, **{f"param_{n}": float(v) for n, v in zip(self.problem.param_names, theta)}}
        metrics["elapsed"] = time.perf_counter() - t0
        sink.log_metrics(member, self.objective.calls, metrics)

    def _migrad_from_starts(self, on_call: Callable[[float, np.ndarray], None]) -> tuple[Minuit | None, bool]:
        """MIGRAD from each start until two agree; the Minuit at the lowest minimum and whether a stop was asked.

        The first start runs MINUIT's default strategy 1 (its gradient check and Hessian updates); the others only
        confirm or improve its minimum and run strategy 0. A lower minimum found that way is polished with
        strategy 1 before HESSE."""
        best: Minuit | None = None
        self.objective.on_call = on_call
        names, ncall = self.problem.param_names, None  # MINUIT's own call limit: 200 + 100 P + 5 P² per start
        try:
            for i, start in enumerate(self._start_points()):
                if self._minimum_confirmed():
                    break
                m = migrad(self.objective, start, self.lo, self.hi, names, ncall, self.tolerance, strategy=int(i == 0))
                self.start_results.append((m.fval, torch.tensor(np.asarray(m.values), dtype=_F64)))
                if best is None or m.fval < best.fval - self.same_minimum:
                    best = m
            if best is not None and best.strategy.strategy == 0:
                best.strategy = 1
                best.migrad(ncall=ncall)
        except FitStopped:
            return best, True
        finally:
            self.objective.on_call = None
        if best is not None and not best.valid:
            self.warnings.append(f"MIGRAD found no valid minimum ({_why_invalid(best)})")
        return best, False

    def fit(
        self,
        member: int,
        sink: MetricsSink,
        stop_requested: Callable[[], bool] = lambda: False,
        stop_check_every: int = 20,
    ) -> MemberResult:
        """MIGRAD from each start until two agree; at the lowest
        minimum HESSE, and MINOS for the parameters within 2σ of a bound (all with ``config.minos``). The
        metrics show the best point so far, by NLL call; a stopped fit keeps it, without errors."""
        t0 = time.perf_counter()
        chunk = max(1, min(self.config.metrics_every, stop_check_every))
        best: dict[str, Any] = {"nll": math.inf, "x": None}

        def on_call(value: float, x: np.ndarray) -> None:
            if value < best["nll"]:
                best.update(nll=value, x=x.copy())
            calls = self.objective.calls
            if calls % chunk == 0 and best["x"] is not None:
                self._log(sink, member, best["nll"], best["x"], t0)
            if calls % stop_check_every == 0 and stop_requested():
                raise FitStopped

        m, stopped = (None, True) if stop_requested() else self._migrad_from_starts(on_call)
        if m is not None and not math.isfinite(m.fval):
            m = None  # MINUIT ended on a non-finite value: no minimum (below: the best finite point, or an error)
        if m is not None and not stopped:
            self.theta_hat = torch.tensor(np.asarray(m.values), dtype=_F64)
            m.hesse()
            self._minos(m)
            self._errors(m, self.intervals.errors)
        else:
            if best["x"] is not None:
                self.theta_hat = torch.tensor(best["x"], dtype=_F64)
            elif not stopped:
                raise FloatingPointError("the negative log-likelihood was never finite during the fit")
            self.warnings.append("stopped before HESSE: parameter and QCF errors are NaN")
        hesse_errors = np.asarray(m.errors) if m is not None and not stopped else None
        flags = at_bound(
            self.theta_hat.numpy(), self.lo.numpy(), self.hi.numpy(), self.intervals.at_limit, hesse_errors
        )
        if flags.any():
            names = ", ".join(n for n, f in zip(self.problem.param_names, flags) if f)
            self.warnings.append(f"parameters at a bound ({names})")
        if not stopped and best["x"] is not None:
            self._log(sink, member, float(m.fval) if m is not None else best["nll"], self.theta_hat, t0)
        wall = time.perf_counter() - t0
        p = self.predict()
        calls = self.objective.calls
        sink.log_snapshot(member, calls, self.snapshot())
        return MemberResult(
            member=member,
            status="stopped" if stopped else "completed",
            steps_done=calls,
            wall_seconds=wall,
            events_processed=(calls + self.objective.grads) * self.n_measured,
            metrics={},  # filled from a HistorySink by the caller
            params_pred=p["params_mean"],
            params_pred_std=p["params_std"],
            qcf_pred=p["qcf_mean"],
            qcf_pred_std=p["qcf_std"],
            hist_gen=p["hist_gen"],
            chi2_ndf=p["chi2_ndf"],
            error="; ".join(self.warnings),
            params_draws=p.get("params_draws"),
            fit_valid=bool(m is not None and not stopped and m.valid and bool(torch.isfinite(self.cov).all())),
            fit_edm=float(m.fmin.edm) if m is not None and m.fmin is not None else math.nan,
            fit_calls=calls,
            at_bound=flags,
            minos_errors=self.intervals.errors,
        )

    def _minos(self, m: Minuit) -> None:
        """MINOS for the parameters within 2σ of a bound, or all of them with ``config.minos``."""
        names = list(self.problem.param_names) if self.config.minos else near_a_bound(m)
        self.intervals = minos(m, names)
        if self.intervals.invalid:
            self.warnings.append(f"MINOS found no valid interval for {', '.join(self.intervals.invalid)}")

    def snapshot(self) -> dict[str, Any]:
        """The GAN's live-plot view (:func:`~qcf_studio.engine.run.sinks.live_snapshot`): the same keys from the same
        predict() outputs."""
        return live_snapshot(self)


def _why_invalid(m: Minuit) -> str:
    """MIGRAD's reasons for an invalid minimum, in words."""
    f = m.fmin
    if f is None:
        return "no minimum"
    reasons = [
        text
        for flag, text in (
            (f.has_reached_call_limit, "call limit reached"),
            (f.is_above_max_edm, f"EDM {f.edm:.2g} above its goal"),
            (not f.has_posdef_covar, "covariance not positive definite"),
        )
        if flag
    ]
    return ", ".join(reasons) or "see iminuit's FMin"
