"""The likelihood fit as it was before iminuit (qcf-studio ≤ 6 December 2026), kept for the cross-check in
tests/test_mle_minuit.py: torch L-BFGS (strong Wolfe) over ``u`` with ``θ = lo + sigmoid(u)(hi − lo)`` from the
middle of the bounds, errors from the autograd Hessian of the NLL (the sandwich ``H⁻¹ V H⁻¹`` for weighted data)."""

from __future__ import annotations

import torch

from qcf_studio.engine.mle import MLEFit


def lbfgs_fit(f: MLEFit, max_iterations: int = 1500) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous fit's estimate and errors on the NLL of ``f`` (the same data, grid and bounds)."""

    def theta_of(u: torch.Tensor) -> torch.Tensor:
        return f.lo + torch.sigmoid(u) * (f.hi - f.lo)

    u = torch.zeros(len(f.lo), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=max_iterations,
        max_eval=25 * max_iterations,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = f.nll(theta_of(u))
        loss.backward()
        return loss

    opt.step(closure)
    theta = theta_of(u.detach())
    h = torch.autograd.functional.hessian(f.nll, theta.clone())
    cov = torch.linalg.inv(0.5 * (h + h.T))
    if f.event_w is not None:
        saved, f.theta_hat = f.theta_hat, theta
        cov = cov @ f.score_covariance(f.event_w) @ cov
        f.theta_hat = saved
    return theta, torch.sqrt(torch.diagonal(cov))
