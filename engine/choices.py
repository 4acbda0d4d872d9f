"""The fixed sets of values that spec fields take, as ``Literal`` types (the JSON Schema's enums) and tuples.

Torch-free, so that validating a spec imports no torch; the modules that act on these values
(:mod:`qcf_studio.engine.run.parallel`, :mod:`qcf_studio.engine.run.devices`, :mod:`qcf_studio.engine.samplers`,
:mod:`qcf_studio.engine.detector`) import
them here.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "Method",
    "METHODS",
    "ClusterMode",
    "CLUSTER_MODES",
    "Schedule",
    "SCHEDULES",
    "Device",
    "DEVICES",
    "GridSpacingChoice",
    "GRID_SPACINGS",
    "GRID_SPACING_CHOICES",
    "Truths",
    "TRUTHS",
    "BackgroundShape",
    "BACKGROUND_SHAPES",
]

Method = Literal["gan", "mle"]  # training.method, campaign.methods
ClusterMode = Literal["ensemble", "data_parallel"]  # cluster.mode
Schedule = Literal["sync", "grouped"]  # cluster.schedule: how data-parallel ranks share gradients
Device = Literal["auto", "cpu", "cuda"]  # cluster.device
GridSpacingChoice = Literal["auto", "uniform", "clustered"]  # training.grid_spacing (auto: the problem's)
Truths = Literal["fixed", "prior"]  # campaign.truths
BackgroundShape = Literal["uniform", "exponential"]  # detector.background.shape

METHODS: tuple[str, ...] = get_args(Method)
CLUSTER_MODES: tuple[str, ...] = get_args(ClusterMode)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
DEVICES: tuple[str, ...] = get_args(Device)
GRID_SPACING_CHOICES: tuple[str, ...] = get_args(GridSpacingChoice)
GRID_SPACINGS: tuple[str, ...] = GRID_SPACING_CHOICES[1:]  # how a tabulation grid's points are spread
TRUTHS: tuple[str, ...] = get_args(Truths)
BACKGROUND_SHAPES: tuple[str, ...] = get_args(BackgroundShape)
