"""Unbinned maximum-likelihood fit with the GAN's forward model: the statistical reference.

The negative log-likelihood of the measured events is

    NLL(θ) = − Σ_j Σ_i log p_j(x_ji; θ)  [+ Σ_j (σ_tot,j(θ) − σ_meas,j)² / (2 δ_j²)]

with ``p_j`` the density of observable ``j`` normalised over its domain; the Gaussian
cross-section term enters for problems with ``normalisation_params`` (event shapes alone cannot
fix normalisations). Densities are exact where the problem has an analytic
:meth:`~qcf_studio.engine.problems.Problem.log_density` and no detector smearing (``gauss6``); otherwise the
observables are tabulated in float64 on a fine grid clustered towards the domain's ends (power
laws), folded numerically with the resolution smearing ``x → x (1 − R)``, normalised with the
trapezoid rule (the exact integral of the linear interpolant) and interpolated linearly (bilinearly
in 2D) at the events. The interpolation cells are fixed, so the NLL is smooth in θ.

The NLL is minimised by MINUIT (iminuit): MIGRAD on θ itself, with the problem's bounds as Minuit limits, the
autograd gradient supplied and ``errordef`` 0.5 (a negative log-likelihood), from the middle of the bounds and then
seeded random starts until two starts reach the same lowest minimum (at most ``MLEFit.starts``; the first runs
MINUIT's default strategy 1, which checks the gradient against finite differences, the others strategy 0). At the
lowest minimum HESSE gives the covariance (H⁻¹, from MINUIT's own second derivatives), and MINOS the asymmetric
interval of every parameter whose estimate lies within 2σ of a limit (of all with ``training.minos: true``). The
result reports MINUIT's validity, the EDM and the NLL calls, and flags a parameter at a bound (its estimate within
1e-3 of its range from a limit, or its MINOS interval reaching one): HESSE's error is not reliable there. QCF bands
come from θ ~ N(θ̂, H⁻¹) drawn through the theory.

Weighted data (``data.weights``, normalised to mean 1 per observable): the fit maximises the weighted
log-likelihood ``Σ w log p`` (plus the cross-section term), whose Hessian alone does not give the
errors (it would for weights that count duplicated events, not in general). The covariance is then
the sandwich ``H⁻¹ V H⁻¹`` (``H⁻¹`` HESSE's covariance of the weighted NLL) with
``V = Σ_i w_i² s_i s_iᵀ + J_σᵀ diag(δ⁻²) J_σ``: ``s_i`` the score
``∂ log p(x_i) / ∂θ`` of each event at θ̂ (forward-mode derivatives; central differences for a
problem whose theory has no forward-mode rules) and ``J_σ`` the Jacobian of the cross sections. It is
asymptotic like ``H⁻¹`` and ignores any uncertainty of the weights themselves. Negative weights (sWeights,
background subtraction) enter the same way; each observable's weights must sum to a positive number. Observables
with different numbers of events (``data.counts``): each observable's sum runs over its own events, the padding
of the shorter ones is left out.

Approximations (tabulated problems): linear/bilinear interpolation on the grid (1D: 4001 points,
2001 when folding; 2D: 257², 385² when folding; shifts of θ̂ below 0.02σ at 10⁵ events); for
smearing, the folding kernel is integrated exactly over the cells around the grid nodes
(mass-conserving) while the truth-level density enters through the trapezoid rule, and the folded
grid extends ``fold_sigmas`` resolution widths past the domain's ends (and covers every event).

The fit runs on the CPU in float64, also on GPU workers (``cluster.device`` applies to GAN training
only; ``cuda`` with ``method: mle`` is refused by the spec's validation).

Layout: :mod:`qcf_studio.engine.mle.likelihood` (the forward model on its grid and the NLL),
:mod:`qcf_studio.engine.mle.minuit` (the
NLL as MINUIT's objective, MIGRAD, MINOS, bound flags), :mod:`qcf_studio.engine.mle.errors` (HESSE errors and the
predictions
drawn with them) and :mod:`qcf_studio.engine.mle.fit` (:class:`MLEFit`: the data, the starts and the member result).
"""

from qcf_studio.engine.mle.fit import MLEFit
from qcf_studio.engine.mle.likelihood import fold_matrix
from qcf_studio.engine.samplers import clustered_grid, trapezoid_weights

__all__ = ["MLEFit", "clustered_grid", "trapezoid_weights", "fold_matrix"]
