"""Everything about one run that does not depend on where it runs: data, seeds, member training."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import torch

from qcf_studio.engine.data.datafiles import read_spec_data
from qcf_studio.engine.data.histograms import HIST_BINS, HIST_BINS_2D
from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.detector import DetectorChain, build_detector
from qcf_studio.engine.gan.checkpoint import CheckpointStore, load_checkpoint, save_checkpoint
from qcf_studio.engine.gan.trainer import GANTrainer, MemberResult
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.results import qcf_grids
from qcf_studio.engine.run.sinks import HistorySink, MetricsSink, MultiSink
from qcf_studio.engine.spec import Spec

if TYPE_CHECKING:
    from qcf_studio.engine.mle import MLEFit
    from qcf_studio.engine.run.parallel import GradientSharing

__all__ = [
    "measured_data",
    "member_data",
    "detector_for",
    "train_member",
    "train_rank",
    "make_trainer",
    "reference_fit",
    "member_seed",
    "qcf_grids",
    "run_name",
    "failed_member",
]


def measured_data(spec: Spec) -> MeasuredData:
    """The spec's measured data: its file (NetCDF, CSV, Parquet or ROOT) if given, else pseudo-data from its truth.

    Raises :class:`~qcf_studio.engine.spec.SpecError` for ``problem.data``, naming the file and what is wrong with
    it, when it is not measured data of the spec's problem: the check a spec's data get before dispatch."""
    problem = get_problem(spec.problem.kind)
    if spec.problem.data:  # checked as an upload is (engine.data.datafiles): no external storage, sizes bounded
        return read_spec_data(spec)
    return make_pseudo_data(
        problem, np.asarray(spec.truth_values()), spec.problem.events, spec.problem.seed, detector_for(spec)
    )


def detector_for(spec: Spec, validate_only: bool = False) -> DetectorChain:
    """The spec's detector chain (a learned surrogate is trained here unless ``validate_only``)."""
    problem = get_problem(spec.problem.kind)
    return build_detector(spec.detector.section(), problem.domain, coord_axis=True, validate_only=validate_only)


def member_seed(spec: Spec, member: int) -> int:
    """Distinct, reproducible training seed per ensemble member (independent of the data seed)."""
    return 1_000_003 * (spec.problem.seed + 1) + 7919 * (member + 1)


def member_data(spec: Spec, data: MeasuredData, member: int) -> MeasuredData:
    """What member ``member`` trains on: the measured data, or with ``ensemble.bootstrap`` its own
    bootstrap replica of them (the same for all ranks of a data-parallel member and after a restart)."""
    if not spec.ensemble.bootstrap:
        return data
    return data.bootstrap_replica(1_000_033 * (spec.problem.seed + 1) + 104_723 * (member + 1))


def make_trainer(
    spec: Spec,
    data: MeasuredData,
    member: int,
    method: str,
    shard: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> GANTrainer | MLEFit:
    """The GAN trainer or maximum-likelihood fit of ``spec`` for ``member`` (both have ``fit``).

    ``shard = (rank, ranks)`` makes a data-parallel rank's trainer (GAN only): its own share of the
    measured events and its own seed. A GAN trains on ``device``; the likelihood fit runs on the CPU.
    """
    lo, hi = spec.bounds_values()
    problem, config = get_problem(spec.problem.kind), spec.training.config()
    seed = member_seed(spec, member) + (0 if shard is None else 104_729 * shard[0])
    grids = tuple(torch.as_tensor(g, dtype=torch.float32) for g in qcf_grids(spec))
    bounds = (torch.tensor(lo), torch.tensor(hi))
    if method == "mle":
        from qcf_studio.engine.mle import MLEFit  # noqa: F811  (only the mle method needs it)

        return MLEFit(
            problem, data, config, resolution=spec.detector.resolution, seed=seed, qcf_grids=grids, bounds=bounds
        )
    return GANTrainer(
        problem,
        data,
        config,
        resolution=spec.detector.resolution,
        seed=seed,
        qcf_grids=grids,
        bounds=bounds,
        detector=detector_for(spec),
        shard=shard,
        device=device,
    )


def reference_fit(spec: Spec, data: MeasuredData) -> MemberResult:
    """The maximum-likelihood fit of the same data that a GAN run is compared with."""
    return make_trainer(spec, data, 0, "mle").fit(0, HistorySink())


def train_member(
    spec: Spec,
    member: int,
    data: MeasuredData,
    sink: MetricsSink,
    stop_requested: Callable[[], bool] = lambda: False,
    checkpoints: CheckpointStore | None = None,
    device: torch.device | str = "cpu",
) -> MemberResult:
    """Train ensemble member ``member`` of ``spec`` on ``data`` (a GAN on ``device``) and return what it produced.

    With ``checkpoints``, a GAN member saves its state every ``cluster.checkpoint_every`` steps and,
    if the store already holds a checkpoint (its previous worker died), resumes from it: its
    metric history up to that step is kept and ``result.resumed_from`` says where it went on.
    """
    trainer = make_trainer(spec, member_data(spec, data, member), member, spec.training.method, device=device)
    history = HistorySink()
    resumed_from = 0
    blob = checkpoints.load() if checkpoints is not None and isinstance(trainer, GANTrainer) else None
    if blob is not None and isinstance(trainer, GANTrainer):  # (only a GAN's store is read)
        history.columns[member] = load_checkpoint(trainer, blob)
        resumed_from = trainer.step
        elapsed = history.columns[member].get("elapsed")
        trainer.elapsed_offset = elapsed[-1] if elapsed else 0.0

    def save(t: GANTrainer) -> None:
        assert checkpoints is not None
        checkpoints.save(save_checkpoint(t, history.of(member)), t.step)

    every = spec.cluster.checkpoint_every if checkpoints is not None else 0
    if isinstance(trainer, GANTrainer):
        result = trainer.fit(member, MultiSink(sink, history), stop_requested, checkpoint=save, checkpoint_every=every)
    else:
        result = trainer.fit(member, MultiSink(sink, history), stop_requested)
    result.metrics = history.of(member)
    result.resumed_from = resumed_from
    return result


def train_rank(
    spec: Spec,
    member: int,
    rank: int,
    data: MeasuredData,
    sink: MetricsSink,
    sharing: GradientSharing,
    stop_requested: Callable[[], bool] = lambda: False,
    device: torch.device | str = "cpu",
) -> MemberResult:
    """Train rank ``rank`` of data-parallel member ``member`` on ``device``; every rank returns the member's
    result.

    The ranks start from rank 0's generator weights and share its gradients through ``sharing``
    (made for the same device); only rank 0 should be given a sink that reaches the user.
    """
    trainer = make_trainer(
        spec, member_data(spec, data, member), member, "gan", shard=(rank, spec.cluster.ranks), device=device
    )
    assert isinstance(trainer, GANTrainer)
    trainer.sharing = sharing
    sharing.broadcast_parameters(trainer.generator.parameters())
    history = HistorySink()
    result = trainer.fit(member, MultiSink(sink, history), stop_requested)
    result.metrics = history.of(member)
    result.comm_seconds = sharing.comm_seconds
    return result


def failed_member(spec: Spec, member: int, metrics: dict[str, list[float]], error: str) -> MemberResult:
    """A placeholder result for a member that died: its streamed metrics are kept, predictions NaN."""
    problem = get_problem(spec.problem.kind)
    n_p, n_q, n_o = len(problem.param_names), len(problem.qcf_names), len(problem.observable_names)
    grid_shape = tuple(g.shape[0] for g in qcf_grids(spec))
    bins = (HIST_BINS,) if problem.event_dims == 1 else (HIST_BINS_2D,) * 2
    return MemberResult(
        member=member,
        status="failed",
        steps_done=int(metrics["step"][-1]) if metrics.get("step") else 0,
        wall_seconds=float(metrics["elapsed"][-1]) if metrics.get("elapsed") else 0.0,
        events_processed=0,
        metrics=metrics,
        params_pred=np.full(n_p, np.nan),
        params_pred_std=np.full(n_p, np.nan),
        qcf_pred=np.full((n_q, *grid_shape), np.nan),
        qcf_pred_std=np.full((n_q, *grid_shape), np.nan),
        hist_gen=np.full((n_o, *bins), np.nan),
        chi2_ndf=np.full(n_o, np.nan),
        error=error,
    )


def run_name(spec: Spec) -> str:
    """``<spec name>-<UTC time>``: the stem of a run's file (:func:`qcf_studio.engine.results.files.save_run` adds
    ``-2``, ...
    when another run of the same second took it)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', spec.name)}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
