"""What a GAN ensemble member is given and what it returns: :class:`TrainingConfig` (the ``training``
section of a spec) and :class:`MemberResult` (plain arrays, cheap to ship from a Dask worker)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated

from pydantic import with_config

from qcf_studio.engine.choices import GridSpacingChoice
from qcf_studio.engine.specfields import SECTION_CONFIG, Flag, Number, OptionalFlag, Range, Whole

if TYPE_CHECKING:  # numpy only for MemberResult's annotations: validating a spec imports no numpy
    import numpy as np

__all__ = ["TrainingConfig", "MemberResult", "PARAM_DRAWS"]

# Parameter draws a member keeps (generator draws; a likelihood fit: N(θ̂, H⁻¹)) for SBC ranks in campaigns.
PARAM_DRAWS = 100


@with_config(SECTION_CONFIG)
@dataclass
class TrainingConfig:
    """Hyperparameters of GAN training (the ``training`` section of a spec, less ``method``).

    Each field's type says what a spec may give it (:mod:`qcf_studio.engine.specfields`); the docstring under it
    is its description in the spec's JSON Schema. The likelihood fit (:class:`~qcf_studio.engine.mle.MLEFit`) reads
    ``metrics_every`` and ``minos`` only.
    """

    steps: Annotated[Whole, Range(1)] = 1500
    """Training steps (generator and discriminator updates)."""
    lr_g: Annotated[Number, Range(0, 1, lo_open=True, hi_open=True)] = 2e-3
    """Learning rate of the generator."""
    lr_d: Annotated[Number, Range(0, 1, lo_open=True, hi_open=True)] = 2e-3
    """Learning rate of the discriminator."""
    lr_final: Annotated[Number, Range(0, 1, lo_open=True)] = 0.1
    """The fraction of the learning rates reached by the last step (exponential decay)."""
    batch_params: Annotated[Whole, Range(1)] = 64
    """Parameter sets drawn from the generator per step."""
    events_per_param: Annotated[Whole, Range(1)] = 64
    """Events per observable per parameter set."""
    noise_dim: Annotated[Whole, Range(1)] = 8
    """Dimension of the generator's noise input."""
    gen_width: Annotated[Whole, Range(1)] = 64
    """Width of the generator's hidden layers."""
    gen_depth: Annotated[Whole, Range(0)] = 2
    """Hidden layers of the generator."""
    disc_width: Annotated[Whole, Range(1)] = 64
    """Width of the discriminator's hidden layers."""
    disc_depth: Annotated[Whole, Range(0)] = 2
    """Hidden layers of the discriminator."""
    disc_edge_features: OptionalFlag = None
    """Log-distance features of the discriminator (null: the problem's default)."""
    disc_per_observable: OptionalFlag = None
    """A discriminator network per observable (null: the problem's default)."""
    grid_points: Annotated[Whole, Range(0)] = 0
    """Tabulation grid of the differentiable sampler, points per axis (0: the problem's default; else at least 16)."""
    grid_spacing: GridSpacingChoice = "auto"
    """uniform | clustered (dense at the domain's ends) | auto: the problem's default."""
    xsec_weight: Number = 1.0
    """Weight of the cross-section discriminator in the generator loss."""
    # Starting late (0.3) sent proxy1d's Nu to its bound: Adam met a new gradient at full step size.
    xsec_start: Annotated[Number, Range(0, 1)] = 0.0
    """Fraction of the steps fitted on event shapes alone before the cross-section weight ramps up."""
    xsec_ramp: Annotated[Number, Range(0, 1)] = 0.05
    """Fraction of the steps over which the cross-section weight ramps up linearly."""
    # Point estimates (for bootstrap ensembles): the noise shrinks and the estimate averages the last steps.
    noise_final: Annotated[Number, Range(0, 1)] = 1.0
    """The generator's noise scale after the first quarter of training (0: one parameter set)."""
    average_last: Annotated[Number, Range(0, 1)] = 0.0
    """The parameter estimate is the mean over this last fraction of the steps."""
    metrics_every: Annotated[Whole, Range(1)] = 10
    """Steps between rows of metrics."""
    snapshot_every: Annotated[Whole, Range(1)] = 100
    """Steps between QCF snapshots streamed to the dashboard."""
    minos: Flag = False
    """Likelihood fit: MINOS for every parameter (else only for those within 2σ of a bound)."""

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
