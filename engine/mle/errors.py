"""Errors of :class:`~qcf_studio.engine.mle.MLEFit` from MINUIT's HESSE (the sandwich for weighted data), and the
predictions at
the optimum drawn with them."""

from __future__ import annotations

import math

import numpy as np
import torch
from iminuit import Minuit
from torch import Tensor

from qcf_studio.engine.data.histograms import chi2_per_ndf, density_histograms, histogram_counts
from qcf_studio.engine.detector import ResolutionSmearing
from qcf_studio.engine.gan.config import PARAM_DRAWS
from qcf_studio.engine.mle.likelihood import _F64, LikelihoodModel
from qcf_studio.engine.mle.minuit import Objective, at_bound, hesse_covariance, hesse_holding


class ErrorsAndPredictions(LikelihoodModel):
    """HESSE errors and predictions of :class:`~qcf_studio.engine.mle.MLEFit`, which sets the attributes below."""

    rng: torch.Generator
    qcf_grids: tuple[Tensor, ...]
    edges: np.ndarray
    data_counts: np.ndarray
    data_sumw2: np.ndarray | None
    theta_hat: Tensor
    cov: Tensor
    objective: Objective
    qcf_draws: tuple[int, int]
    simulated_events: tuple[int, int]

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

    def _errors(self, m: Minuit, minos_errors: np.ndarray) -> None:
        """The covariance from HESSE at the minimum of ``m`` (run by the caller): ``H⁻¹`` (``errordef`` 0.5), or for
        weighted data the sandwich ``H⁻¹ V H⁻¹`` with HESSE's ``H⁻¹`` as the bread.

        Parameters at a limit are held there and HESSE reruns on the others, as MINUIT's users do by hand: at a
        limit MINUIT's bounded transform leaves the NLL no curvature it can use, so HESSE quotes a vanishing error
        for that parameter or forces its matrix positive definite (and then every error is lost). Those parameters
        get their MINOS error towards the inside of the bounds (``minos_errors``, ``(P, 2)``), uncorrelated with the
        others; for weighted data scaled by the sandwich's ratio to ``H⁻¹`` on that parameter
        (:meth:`held_sandwich_scale`). NaN, with a warning, where HESSE still finds no covariance or MINOS no error.
        """
        n = len(self.lo)
        theta = np.asarray(m.values, dtype=np.float64)
        fixed = at_bound(theta, self.lo.numpy(), self.hi.numpy(), np.zeros(n, dtype=bool))  # at it, not near it
        names = [name for name, f in zip(m.parameters, fixed) if f]
        hesse, why = hesse_covariance(hesse_holding(m, self.objective, names) if names else m)
        held = f" with {', '.join(names)} held at its limit" if names else ""
        self.cov = torch.full((n, n), math.nan, dtype=_F64)
        if hesse is None:
            self.warnings.append(f"HESSE found no covariance at the minimum{held} (it {why}): errors are NaN")
            return
        cov = torch.as_tensor(hesse)
        scale = np.ones(n)
        if self.event_w is not None:
            v = self.score_covariance(self.event_w)
            cov = cov @ v @ cov
            cov = 0.5 * (cov + cov.T)
            scale = self.held_sandwich_scale(v) if names else scale
            if not np.isfinite(scale[fixed]).all():
                self.warnings.append(
                    f"no sandwich for {', '.join(names)} at its limit (the NLL's Hessian there is not positive "
                    "definite): its error is the weighted likelihood's MINOS error"
                )
                scale = np.ones(n)
        for k in np.flatnonzero(fixed):
            lower, upper = minos_errors[k]
            inside = -lower if self.hi[k] - theta[k] < theta[k] - self.lo[k] else upper
            if not np.isfinite(inside) or inside <= 0:
                self.warnings.append(f"MINOS found no error for {m.parameters[k]} at its limit: errors are NaN")
                return
            cov[k, k] = float(inside * scale[k]) ** 2
        self.cov = cov
        if names:
            scaled = " scaled by the sandwich" if self.event_w is not None and not np.all(scale == 1) else ""
            self.warnings.append(f"errors of {', '.join(names)} from MINOS{scaled}, the others' from HESSE{held}")

    def held_sandwich_scale(self, v: Tensor) -> np.ndarray:
        """Per parameter, ``sqrt((H⁻¹ V H⁻¹)_kk / (H⁻¹)_kk)`` at θ̂ with ``H`` the weighted NLL's Hessian (by autograd,
        in the parameters themselves, where MINUIT's bounded transform does not reach) and ``v`` the scores'
        covariance (:meth:`score_covariance`): how much the sandwich widens an error of the weighted likelihood (about
        √2 for a bootstrap replica's Poisson weights, whose E[w²] is 2). NaN where ``H`` is not positive definite."""
        h = torch.autograd.functional.hessian(self.nll, self.theta_hat.detach().clone())
        h = 0.5 * (h + h.T)
        if not bool(torch.isfinite(h).all()) or float(torch.linalg.eigvalsh(h).min()) <= 0:
            return np.full(len(self.lo), math.nan)
        bread = torch.linalg.inv(h)
        sandwich = bread @ v @ bread
        ratio = (torch.diagonal(sandwich) / torch.diagonal(bread)).numpy()
        return np.where(ratio > 0, np.sqrt(np.abs(ratio)), math.nan)

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
            out["params_draws"] = samples[:PARAM_DRAWS].numpy().copy()
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
