"""The problem interface: truth, bounds, QCFs and observables of one proxy inverse problem."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor


class Problem:
    """A proxy inverse problem on a 1D domain.

    A subclass names its parameters with their standard truth and bounds, and maps a batch of
    parameter sets to QCFs and to (unnormalised) observable densities on a grid. Everything else
    (pseudo-data, sampling, training, plots) is generic.

    Class attributes:
        kind: the key of ``problem.kind`` in a spec.
        param_names: names of the fitted parameters, in order.
        truth: the standard truth, one value per parameter.
        lo, hi: bounds of the generator's output, one value per parameter.
        qcf_names: names of the reported QCFs.
        observable_names: names of the measured observables (one event sample each).
        x_range: the domain of the observables' events.
        core_range: where closure of the QCFs is judged.
        description: one line shown in the UI.
        normalisation_params: parameters that set overall normalisations. The measured integrated
            cross sections steer only these during training; event shapes steer the rest.
    """

    kind: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    truth: ClassVar[tuple[float, ...]]
    lo: ClassVar[tuple[float, ...]]
    hi: ClassVar[tuple[float, ...]]
    qcf_names: ClassVar[tuple[str, ...]]
    observable_names: ClassVar[tuple[str, ...]]
    x_range: ClassVar[tuple[float, float]]
    core_range: ClassVar[tuple[float, float]]
    description: ClassVar[str] = ""
    normalisation_params: ClassVar[tuple[str, ...]] = ()

    def qcfs(self, theta: Tensor, x: Tensor) -> Tensor:
        """QCFs for a batch of parameter sets.

        Arguments:
            theta: parameters, shape ``(B, P)``.
            x: points of the domain, shape ``(G,)``.

        Returns:
            QCF values, shape ``(B, Q, G)``.
        """
        raise NotImplementedError

    def observables(self, theta: Tensor, x: Tensor) -> Tensor:
        """Observable densities (differential cross sections), shape ``(B, O, G)``."""
        raise NotImplementedError

    # Helpers shared by subclasses -------------------------------------------------------------

    @classmethod
    def truth_tensor(cls, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.tensor(cls.truth, dtype=dtype)

    @classmethod
    def bounds(cls, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        return torch.tensor(cls.lo, dtype=dtype), torch.tensor(cls.hi, dtype=dtype)

    @classmethod
    def grid(cls, points: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """An even grid over ``x_range`` including both ends."""
        return torch.linspace(cls.x_range[0], cls.x_range[1], points, dtype=dtype)
