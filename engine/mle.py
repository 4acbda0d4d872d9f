"""Unbinned maximum-likelihood fit with the GAN's forward model: the statistical reference.

The negative log-likelihood of the measured events is

    NLL(θ) = − Σ_j Σ_i log p_j(x_ji; θ)  [+ Σ_j (σ_tot,j(θ) − σ_meas,j)² / (2 δ_j²)]

with ``p_j`` the density of observable ``j`` normalised over its domain; the Gaussian
cross-section term enters for problems with ``normalisation_params`` (event shapes alone cannot
fix normalisations). Densities are exact where the problem has an analytic
:meth:`~engine.problems.Problem.log_density` and no detector smearing (``gauss6``); otherwise the
observables are tabulated in float64 on a fine grid clustered towards the domain's ends (power
laws), folded numerically with the resolution smearing ``x → x (1 − R)``, normalised with the
trapezoid rule (the exact integral of the linear interpolant) and interpolated linearly (bilinearly
in 2D) at the events. The interpolation cells are fixed, so the NLL is smooth in θ.

The NLL is minimised with L-BFGS (strong Wolfe line search) over unconstrained ``u`` with
``θ = lo + sigmoid(u)(hi − lo)``, from the middle of the bounds and then seeded random starts until
two starts reach the same lowest minimum (at most ``MLEFit.starts``). Errors come from the Hessian
of the NLL in θ at the optimum (covariance = H⁻¹); QCF bands from θ ~ N(θ̂, H⁻¹) drawn through the
theory.

Weighted data (``data.weights``, normalised to mean 1 per observable): the fit maximises the weighted
log-likelihood ``Σ w log p`` (plus the cross-section term), whose Hessian alone does not give the
errors (it would for weights that count duplicated events, not in general). The covariance is then
the sandwich ``H⁻¹ V H⁻¹`` with ``V = Σ_i w_i² s_i s_iᵀ + J_σᵀ diag(δ⁻²) J_σ``: ``s_i`` the score
``∂ log p(x_i) / ∂θ`` of each event at θ̂ (forward-mode derivatives; central differences for a
problem whose theory has no forward-mode rules) and ``J_σ`` the Jacobian of the cross sections. It is
asymptotic like ``H⁻¹`` and ignores any uncertainty of the weights themselves.

Approximations (tabulated problems): linear/bilinear interpolation on the grid (1D: 4001 points,
2001 when folding; 2D: 257², 385² when folding; shifts of θ̂ below 0.02σ at 10⁵ events); for
smearing, the folding kernel is integrated exactly over the cells around the grid nodes
(mass-conserving) while the truth-level density enters through the trapezoid rule, and the folded
grid extends ``fold_sigmas`` resolution widths past the domain's ends (and covers every event).

The fit runs on the CPU in float64, also on GPU workers (``cluster.device`` applies to GAN training
only; ``cuda`` with ``method: mle`` is refused by the spec's validation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.detector import ResolutionSmearing
from engine.histograms import chi2_per_ndf, data_counts, density_histograms, histogram_counts, histogram_edges
from engine.problems import Problem
from engine.pseudodata import MeasuredData, normalise_weights
from engine.samplers import clustered_grid, trapezoid_weights
from engine.sinks import MetricsSink
from engine.training import GANTrainer, MemberResult, TrainingConfig

__all__ = ["MLEFit", "clustered_grid", "trapezoid_weights", "fold_matrix"]

_F64 = torch.float64
_TINY = 1e-300


def _smeared_cdf(edges: Tensor, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``P(x (1 − R) ≤ e)`` and its complement for ``R ~ N(0, σ²)``: ``(E, G)`` each."""
    x = torch.where(x == 0, torch.full_like(x, 1e-200), x)
    ratio = edges[:, None] / x[None, :]
    arg = torch.where(x[None, :] > 0, ratio - 1.0, 1.0 - ratio) / sigma
    return torch.special.ndtr(arg), torch.special.ndtr(-arg)


def fold_matrix(truth_grid: Tensor, folded_grid: Tensor, sigma: float) -> Tensor:
    """Matrix ``M (G', G)`` with ``p'(x'_i) ≈ Σ_j M_ij p(x_j)`` for the smearing ``x' = x (1 − R)``.

    Each truth node ``x_j`` carries the mass ``w_j p(x_j)`` (trapezoid weights); the probability that
    it lands in the cell around folded node ``i`` (between midpoints; the end cells take the
    tails) is the exact Gaussian probability in ``R``, so mass is conserved and a kernel narrower
    than a cell degrades to the identity instead of aliasing. Dividing by the cell width gives the
    cell-averaged density at the node.
    """
    mid = 0.5 * (folded_grid[1:] + folded_grid[:-1])
    inf = torch.tensor([math.inf], dtype=_F64)
    edges = torch.cat([-inf, mid, inf])
    cdf, sf = _smeared_cdf(edges, truth_grid, sigma)
    # Differences of whichever tail is small, so far-tail cells keep their relative precision.
    prob = torch.where(cdf[:-1] > 0.5, sf[:-1] - sf[1:], cdf[1:] - cdf[:-1]).clamp_min(0.0)  # (G', G)
    return prob * trapezoid_weights(truth_grid)[None, :] / trapezoid_weights(folded_grid)[:, None]


class MLEFit:
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

    # Likelihood ---------------------------------------------------------------------------------

    def _folded_grid(self, truth_grid: Tensor, coord: Tensor) -> Tensor:
        """The truth grid plus evenly spaced nodes (4 per resolution width) past both ends, far enough
        for ``fold_sigmas`` widths and for every event."""
        a, b = float(truth_grid[0]), float(truth_grid[-1])
        k = self.fold_sigmas * self.resolution
        lo = min(a - k * abs(a), float(coord.min()))
        hi = max(b + k * abs(b), float(coord.max()))
        parts = [truth_grid]
        for end, target in ((a, lo), (b, hi)):
            if target == end:
                continue
            step = max(0.25 * self.resolution * abs(end), 1e-3 * (b - a) / len(truth_grid))
            m = min(max(int(math.ceil(abs(target - end) / step)), 1), 400)  # far outliers: coarser spacing
            ext = end + (target - end) * torch.arange(1, m + 1, dtype=_F64) / m
            parts.append(ext)
        return torch.sort(torch.cat(parts)).values

    def _tabulate(self) -> None:
        """Grids, folding matrices and the events' fixed interpolation cells."""
        self.fold: list[Tensor | None] = []
        self.grids: list[Tensor] = []
        index, frac = [], []
        inside = torch.ones(self.n_obs * self.n_events, dtype=torch.bool)
        for axis, tgrid in enumerate(self.truth_grids):
            coord = self.events[..., axis].reshape(-1).contiguous()
            if self.resolution > 0:
                grid = self._folded_grid(tgrid, coord)
                self.fold.append(fold_matrix(tgrid, grid, self.resolution))
            else:
                grid = tgrid
                self.fold.append(None)
            self.grids.append(grid)
            inside &= (coord >= grid[0]) & (coord <= grid[-1])
            k = (torch.searchsorted(grid, coord, right=True) - 1).clamp(0, len(grid) - 2)
            f = ((coord - grid[k]) / (grid[k + 1] - grid[k])).clamp(0.0, 1.0)
            index.append(k)
            frac.append(f)
        # Events outside the tabulated domain (only without smearing: the folded grid covers them all)
        # have zero model density; they are left out of the likelihood, with a warning.
        outside = int((~inside).sum())
        if outside:
            self.warnings.append(f"{outside} events outside the problem's domain were left out of the likelihood")
        self.inside = inside
        self.event_weight = inside.to(_F64) if outside else None
        if self.event_w is not None:  # weighted: Σ w log v − Σ w log(norm)
            self.event_weight = self.event_w.reshape(-1) * inside.to(_F64)
            self.counts = self.event_weight.reshape(self.n_obs, self.n_events).sum(1)
        else:
            self.counts = inside.reshape(self.n_obs, self.n_events).sum(1).to(_F64)
        self.weights = [trapezoid_weights(g) for g in self.grids]
        obs = torch.arange(self.n_obs).repeat_interleave(self.n_events)
        if len(self.grids) == 1:
            g = len(self.grids[0])
            self.base = obs * g + index[0]
            self.frac = frac[0]
        else:
            gx, gy = len(self.grids[0]), len(self.grids[1])
            self.base = obs * gx * gy + index[0] * gy + index[1]
            self.frac = (frac[0], frac[1])
            self.stride_x = gy

    def densities(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Detector-level densities on the (folded) grid ``(O, G[, G])`` and their integrals ``(O,)``."""
        dens = self.problem.observables(theta[None], *self.truth_grids)[0]
        if len(self.grids) == 1:
            if self.fold[0] is not None:
                dens = dens @ self.fold[0].T
            return dens, dens @ self.weights[0]
        if self.fold[0] is not None:
            dens = torch.matmul(torch.matmul(self.fold[0], dens), self.fold[1].T)
        return dens, torch.einsum("oij,i,j->o", dens, self.weights[0], self.weights[1])

    def _at_events(self, dens: Tensor) -> Tensor:
        """The (folded) densities ``dens`` interpolated at the events: ``(O * N,)``."""
        flat = dens.reshape(-1)
        b = self.base
        if len(self.grids) == 1:
            f = self.frac
            return flat[b] * (1.0 - f) + flat[b + 1] * f
        fx, fy = self.frac
        s = self.stride_x
        return (1.0 - fx) * ((1.0 - fy) * flat[b] + fy * flat[b + 1]) + fx * (
            (1.0 - fy) * flat[b + s] + fy * flat[b + s + 1]
        )

    def event_log_likelihood(self, theta: Tensor) -> Tensor:
        """``log p_j(x_ji; θ)`` of every event, ``(O, N)`` (0 for events outside the tabulated domain)."""
        if self.analytic:
            return self.problem.log_density(theta[None], self.events)[0]
        dens, norm = self.densities(theta)
        log_p = torch.log(self._at_events(dens).clamp_min(_TINY)).reshape(self.n_obs, self.n_events)
        log_p = log_p - torch.log(norm.clamp_min(_TINY))[:, None]
        return torch.where(self.inside.reshape(self.n_obs, self.n_events), log_p, torch.zeros_like(log_p))

    def nll(self, theta: Tensor) -> Tensor:
        """Negative log-likelihood of the data at ``theta (P,)`` (a scalar; differentiable)."""
        if self.analytic:
            log_p = self.problem.log_density(theta[None], self.events)[0]
            out = -(log_p.sum() if self.event_w is None else (self.event_w * log_p).sum())
        else:
            dens, norm = self.densities(theta)
            v = self._at_events(dens)
            log_v = torch.log(v.clamp_min(_TINY))
            if self.event_weight is not None:
                log_v = self.event_weight * log_v
            out = (self.counts * torch.log(norm.clamp_min(_TINY))).sum() - log_v.sum()
        if self.use_xsec:
            xs = self.problem.cross_sections(theta[None], self.truth_grids)[0]
            out = out + 0.5 * (((xs - self.xsec) / self.xsec_err) ** 2).sum()
        return out

    def theta_of(self, u: Tensor) -> Tensor:
        return self.lo + torch.sigmoid(u) * (self.hi - self.lo)

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
        )

    def hessian(self, theta: Tensor | None = None) -> Tensor:
        """Hessian of the NLL in θ, ``(P, P)``, at ``theta`` (the optimum by default)."""
        theta = self.theta_hat if theta is None else theta
        h = torch.autograd.functional.hessian(self.nll, theta.detach().clone())
        return 0.5 * (h + h.T)

    def scores(self, theta: Tensor | None = None) -> Tensor:
        """Per-event scores ``∂ log p_j(x_ji) / ∂θ`` at ``theta`` (θ̂ by default): ``(O, N, P)``.

        Forward-mode derivatives (one pass per parameter); central differences if the theory has
        no forward-mode rule for some operation.
        """
        theta = (self.theta_hat if theta is None else theta).detach().clone()
        cols = []
        try:
            import torch.autograd.forward_ad as fwad

            with torch.no_grad():
                for k in range(len(theta)):
                    with fwad.dual_level():
                        out = self.event_log_likelihood(fwad.make_dual(theta, torch.eye(len(theta), dtype=_F64)[k]))
                        tangent = fwad.unpack_dual(out).tangent
                    cols.append(torch.zeros_like(out) if tangent is None else tangent.clone())
        except (RuntimeError, NotImplementedError):
            cols = []
            with torch.no_grad():
                for k in range(len(theta)):
                    h = 1e-6 * float(self.hi[k] - self.lo[k])
                    step = torch.zeros_like(theta)
                    step[k] = h
                    up, down = self.event_log_likelihood(theta + step), self.event_log_likelihood(theta - step)
                    cols.append((up - down) / (2 * h))
        return torch.stack(cols, dim=-1)

    def score_covariance(self, weights: Tensor) -> Tensor:
        """``V = Σ_i w_i² s_i s_iᵀ + J_σᵀ diag(δ⁻²) J_σ`` at θ̂, the middle of the sandwich ``H⁻¹ V H⁻¹``."""
        s = self.scores().reshape(-1, len(self.theta_hat))
        v = (s * (weights.reshape(-1, 1) ** 2)).T @ s
        if self.use_xsec:
            jac = torch.autograd.functional.jacobian(
                lambda t: self.problem.cross_sections(t[None], self.truth_grids)[0], self.theta_hat.detach().clone()
            )  # (O, P)
            v = v + (jac / self.xsec_err[:, None] ** 2).T @ jac
        return 0.5 * (v + v.T)

    def _errors(self) -> None:
        """Covariance ``H⁻¹`` at θ̂ (weighted data: the sandwich ``H⁻¹ V H⁻¹``); NaN (with a warning) where
        ``H`` is not positive definite."""
        h = self.hessian()
        names = self.problem.param_names
        span = self.hi - self.lo
        at_bound = [n for n, t, a, b in zip(names, self.theta_hat, self.lo, span) if min(t - a, a + b - t) < 1e-4 * b]
        if at_bound:
            self.warnings.append(f"parameters at a bound ({', '.join(at_bound)}): their Hessian errors are unreliable")
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) != 0 or not bool(torch.isfinite(h).all()):
            eig = torch.linalg.eigvalsh(h) if bool(torch.isfinite(h).all()) else torch.tensor([math.nan])
            self.warnings.append(
                f"the Hessian of the NLL at the optimum is not positive definite (smallest eigenvalue "
                f"{float(eig.min()):.3g}): parameter and QCF errors are NaN"
            )
            self.cov = torch.full_like(h, math.nan)
        else:
            self.cov = torch.cholesky_inverse(chol)
            if self.event_w is not None:
                self.cov = self.cov @ self.score_covariance(self.event_w) @ self.cov
                self.cov = 0.5 * (self.cov + self.cov.T)

    # Predictions --------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, n_params: int | None = None, events_per_param: int | None = None) -> dict[str, np.ndarray]:
        """The fit's parameters and errors, QCFs at θ̂ with the std and 16–84% band of θ ~ N(θ̂, H⁻¹)
        (clipped to the bounds), and histograms of events simulated at θ̂ with their χ²/ndf vs data.

        ``n_params`` is the number of θ draws and ``n_params × events_per_param`` the number of
        simulated events per observable (the class defaults if not given); the keys are those of
        :meth:`GANTrainer.predict`.
        """
        two_d = self.problem.event_dims == 2
        draws = n_params or self.qcf_draws[two_d]
        n_sim = n_params * events_per_param if n_params and events_per_param else self.simulated_events[two_d]
        theta = self.theta_hat
        std = torch.sqrt(torch.diagonal(self.cov))
        q_hat = self.problem.qcfs(theta[None], *self.qcf_grids)[0]  # (Q, X[, Y])
        out = {"params_mean": theta.numpy().copy(), "params_std": std.numpy().copy(), "qcf_mean": q_hat.numpy()}
        chol, info = torch.linalg.cholesky_ex(self.cov)
        if int(info) == 0 and bool(torch.isfinite(chol).all()):
            z = torch.randn((draws, len(theta)), generator=self.rng, dtype=_F64)
            samples = torch.minimum(torch.maximum(theta + z @ chol.T, self.lo), self.hi)
            q = self.problem.qcfs(samples, *self.qcf_grids)  # (B, Q, X[, Y])
        else:
            q = torch.stack([q_hat + math.nan, q_hat + math.nan])
        levels = torch.tensor([0.16, 0.84], dtype=_F64)
        lo, hi = torch.quantile(q.flatten(2), levels, dim=0)
        out.update(
            {
                "qcf_std": q.std(0).numpy(),
                "qcf_lo": lo.reshape(q.shape[1:]).numpy(),
                "qcf_hi": hi.reshape(q.shape[1:]).numpy(),
            }
        )
        if two_d:
            y = self.qcf_grids[1]
            proj = torch.trapezoid(q, y, dim=-1)
            plo, phi = torch.quantile(proj, levels, dim=0)
            out.update(
                {"qcfx_mean": torch.trapezoid(q_hat, y, dim=-1).numpy(), "qcfx_lo": plo.numpy(), "qcfx_hi": phi.numpy()}
            )
        events = self.simulate(n_sim)
        out["hist_gen"] = density_histograms(events, self.edges)
        out["chi2_ndf"] = chi2_per_ndf(self.data_counts, histogram_counts(events, self.edges), None, self.data_sumw2)
        return out

    @torch.no_grad()
    def simulate(self, n: int, theta: Tensor | None = None) -> np.ndarray:
        """Detector-level events ``(O, n, D)`` at ``theta`` (θ̂ by default), drawn on the problem's fine grid."""
        theta = self.theta_hat if theta is None else theta
        events, _ = self.problem.pseudo_events(theta.to(_F64), n, self.rng)
        return ResolutionSmearing(self.resolution)(events, generator=self.rng).numpy()

    # The live-plot view is the GAN's: the same keys from the same predict() outputs.
    snapshot: Callable[[MLEFit], dict[str, Any]] = GANTrainer.snapshot
