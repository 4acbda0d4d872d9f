"""What a GAN ensemble member is given and what it returns: :class:`TrainingConfig` (the ``training``
section of a spec) and :class:`MemberResult` (plain arrays, cheap to ship from a Dask worker)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

__all__ = ["TrainingConfig", "MemberResult", "PARAM_DRAWS"]

# Parameter draws a member keeps (generator draws; a likelihood fit: N(θ̂, H⁻¹)) for SBC ranks in campaigns.
PARAM_DRAWS = 100


@dataclass
class TrainingConfig:
    """Hyperparameters of GAN training (the ``training`` section of a spec, less ``method``).

    The likelihood fit (:class:`~engine.mle.MLEFit`) reads ``metrics_every`` and ``minos`` only."""

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
    disc_edge_features: bool | None = None  # log-distance features of the discriminator (None: the problem's)
    disc_per_observable: bool | None = None  # a discriminator network per observable (None: the problem's)
    grid_points: int = 0  # tabulation grid of the differentiable sampler, points per axis (0: the problem's default)
    grid_spacing: str = "auto"  # uniform | clustered (dense at the domain's ends) | auto: the problem's default
    xsec_weight: float = 1.0  # weight of the cross-section discriminator in the generator loss
    # Fraction of the steps fitted on event shapes alone before the cross-section weight ramps up linearly over
    # xsec_ramp. Starting late (0.3) sent proxy1d's Nu to its bound: Adam met a new gradient at full step size.
    xsec_start: float = 0.0
    xsec_ramp: float = 0.05
    # Point estimates (for bootstrap ensembles): the generator's noise scale shrinks linearly over the
    # first quarter of training to noise_final (0: one parameter set), and the parameter estimate is the
    # mean over the last average_last fraction of steps.
    noise_final: float = 1.0
    average_last: float = 0.0
    metrics_every: int = 10
    snapshot_every: int = 100
    minos: bool = False  # likelihood fit: MINOS for every parameter (else only for those within 2σ of a bound)

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
    chi2_ndf: np.ndarray
    error: str = ""
    resumed_from: int = 0  # the step a member went on from after its worker died (0: never restarted)
    comm_seconds: float = 0.0  # data-parallel: time this rank spent waiting in collectives
    params_draws: np.ndarray | None = None  # (PARAM_DRAWS, param): draws of the member's parameter distribution
    # A likelihood fit's MINUIT summary (engine.mle); None for a GAN member.
    fit_valid: bool | None = None  # MIGRAD's minimum valid and HESSE's covariance usable
    fit_edm: float | None = None  # estimated distance to the minimum
    fit_calls: int | None = None  # NLL evaluations: every MIGRAD start, HESSE and MINOS
    at_bound: np.ndarray | None = None  # (param,) bool: the estimate at a limit, or its MINOS interval reaching one
    minos_errors: np.ndarray | None = None  # (param, 2): MINOS lower (≤ 0) and upper errors; NaN where not run
