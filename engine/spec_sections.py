"""The sections of a run spec as dataclasses: each field's type says what a spec may give it (checked by
:func:`qcf_studio.engine.specfields.fill_section`, described in the JSON Schema by the docstring under it).

Checks that need more than one field, or the problem, live in :mod:`qcf_studio.engine.spec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Len
from pydantic import with_config

from qcf_studio.engine.choices import ClusterMode, Device, Method, Schedule
from qcf_studio.engine.gan.config import TrainingConfig
from qcf_studio.engine.spec_data import DataColumns
from qcf_studio.engine.spec_detector import DetectorSpec
from qcf_studio.engine.specfields import SECTION_CONFIG, Flag, Number, Range, Text, Whole

__all__ = ["ProblemSpec", "DetectorSpec", "TrainingSpec", "EnsembleSpec", "ClusterSpec", "LimitsSpec", "Bounds"]

Bounds = Annotated[list[Number], Len(2, 2)]  # [low, high]
XsecPair = Annotated[list[Number], Len(2, 2)]  # [value, error]


@with_config(SECTION_CONFIG)
@dataclass
class ProblemSpec:
    """The problem and its measured data (pseudo-data from ``truth``, or the file ``data``)."""

    kind: Text = "proxy1d"
    """The registered problem (proxy1d, proxy2d, multiset2d, gauss6 or a user's)."""
    truth: dict[str, Number] = field(default_factory=dict)
    """Parameter: value of the pseudo-data's truth (omitted: the problem's standard truth)."""
    bounds: dict[str, Bounds] = field(default_factory=dict)
    """Parameter: [low, high] of the generator's output (omitted: the problem's bounds)."""
    events: Annotated[Whole, Range(100)] = 100_000
    """Pseudo-data events per observable."""
    seed: Annotated[Whole, Range(0)] = 1
    """Seed of the pseudo-data."""
    data: Text | None = None
    """A file of measured events instead of pseudo-data: NetCDF, CSV, Parquet or ROOT (relative to the spec's
    folder)."""
    columns: dict[str, DataColumns] | None = None
    """ROOT or Parquet data: observable -> {tree, x, y, weight}, where its events are (null: the standard
    layout: a tree per observable with branches x[, y][, weight]; a Parquet table observable, x[, y][, weight])."""
    xsec: dict[str, XsecPair] | None = None
    """ROOT or Parquet data: observable -> [value, error] of its integrated cross section (null: the file's
    'xsec' text, if any)."""


@with_config(SECTION_CONFIG)
@dataclass
class TrainingSpec(TrainingConfig):
    """How the parameters are fitted: a GAN ensemble or an unbinned maximum-likelihood fit."""

    method: Method = "gan"
    """gan | mle."""
    mle_reference: Flag = False
    """gan runs: also fit the data by maximum likelihood (GAN/MLE error ratio)."""

    def config(self) -> TrainingConfig:
        return TrainingConfig(**{n: getattr(self, n) for n in TrainingConfig.field_names()})


@with_config(SECTION_CONFIG)
@dataclass
class EnsembleSpec:
    """Members trained independently; their spread is the ensemble's error."""

    members: Annotated[Whole, Range(1)] = 2
    """Ensemble members."""
    # The ensemble's errors then come from the spread of the members' estimates, the statistical error of
    # the GAN estimator (see engine.results.ensemble_estimate).
    bootstrap: Flag = False
    """Train each member on its own bootstrap replica of the measured data (Poisson(1) event weights,
    cross sections redrawn within their errors)."""


@with_config(SECTION_CONFIG)
@dataclass
class ClusterSpec:
    """Where and how members train; see ``qcf_studio.engine.run.distributed`` and ``qcf_studio.engine.run.parallel``."""

    workers: Annotated[Whole, Range(1)] = 2
    """Processes of the embedded LocalCluster (ignored with a remote scheduler)."""
    device: Device = "auto"
    """auto: CUDA on workers that have it, else CPU | cpu | cuda: on workers with GPU=1 only."""
    mode: ClusterMode = "ensemble"
    """ensemble: a member per task | data_parallel: ``ranks`` tasks share one generator."""
    ranks: Annotated[Whole, Range(1)] = 1
    """data_parallel: ranks per member, each with its own data shard and discriminator."""
    schedule: Schedule = "sync"
    """data_parallel: sync (all-reduce every step) | grouped (groups sync every sync_every)."""
    group_size: Annotated[Whole, Range(1)] = 1
    """grouped: ranks per group (gradients shared every step inside a group)."""
    sync_every: Annotated[Whole, Range(1)] = 10
    """grouped: steps between the group leaders' weight averages."""
    timeout: Annotated[Number, Range(1)] = 60.0
    """Seconds a rank waits for its peers before it gives up (a lost rank stops the rest)."""
    checkpoint_every: Annotated[Whole, Range(0)] = 100
    """Steps between checkpoints a member resumes from if its worker dies (0: none)."""


@with_config(SECTION_CONFIG)
@dataclass
class LimitsSpec:
    """Upper bounds that validation checks, so that a typo or a hostile spec cannot ask for more than a
    machine has (``events: 1e12``). A spec may raise them (``limits: {members: 500}``) where a cluster really
    needs more; specs typed in the dashboard may not (see ``qcf_studio.app.dashboard.runs``)."""

    events: Annotated[Whole, Range(1)] = 5_000_000
    """problem.events, per observable."""
    steps: Annotated[Whole, Range(1)] = 1_000_000
    """training.steps."""
    members: Annotated[Whole, Range(1)] = 64
    """ensemble.members."""
    ranks: Annotated[Whole, Range(1)] = 64
    """cluster.ranks."""
    workers: Annotated[Whole, Range(1)] = 64
    """cluster.workers (processes of the embedded cluster)."""
    grid_cells: Annotated[Whole, Range(1)] = 1_048_576
    """training.grid_points ** (event coordinates): the sampler's tabulation grid."""
    events_per_step: Annotated[Whole, Range(1)] = 1_000_000
    """training.batch_params * training.events_per_param."""
    network_width: Annotated[Whole, Range(1)] = 4096
    """training.gen_width, disc_width, noise_dim."""
    network_depth: Annotated[Whole, Range(1)] = 64
    """training.gen_depth, disc_depth."""
    metric_points: Annotated[Whole, Range(1)] = 100_000
    """training.steps / metrics_every: rows of metrics per member."""
    snapshots: Annotated[Whole, Range(1)] = 10_000
    """training.steps / snapshot_every: QCF snapshots streamed per member."""
    replicas: Annotated[Whole, Range(1)] = 10_000
    """campaign.replicas: pseudo-data sets of a campaign (each fitted by every method)."""
