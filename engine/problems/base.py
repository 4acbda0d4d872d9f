"""The problem interface: truth, bounds, QCFs, observables and event simulation of one proxy problem."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from qcf_studio.engine import samplers
from qcf_studio.engine.problem_catalog import ProblemInfo, domain_of
from qcf_studio.engine.samplers import cumulative_trapezoid, sample_inverse_cdf


class Problem:
    """A proxy inverse problem on a 1D or 2D domain.

    A subclass names its parameters with their standard truth and bounds, and maps a batch of
    parameter sets to QCFs and to (unnormalised) observable densities tabulated on a grid.
    Everything else (pseudo-data, sampling, training, likelihood fits, plots) is generic. A
    problem whose events are not drawn from tabulated densities overrides :meth:`simulate`
    (and :meth:`log_density` for the likelihood fit); see ``gauss6``.

    Class attributes:
        kind: the key of ``problem.kind`` in a spec.
        param_names: names of the fitted parameters, in order.
        truth: the standard truth, one value per parameter.
        lo, hi: bounds of the generator's output, one value per parameter.
        qcf_names: names of the reported QCFs.
        observable_names: names of the measured observables or data sets (one event sample each).
        x_range: the domain of the events' first coordinate.
        y_range: the domain of the second coordinate for 2D events, else ``None``.
        core_range: where closure of the QCFs is judged (along x; along y the whole range).
        description: one line shown in the UI.
        normalisation_params: parameters that set overall normalisations. The measured integrated
            cross sections steer only these during training; event shapes steer the rest. A
            problem without any has shape-only observables, and its cross sections are unused.
        edge_features: whether the discriminator sees the logs of the distances to the domain's
            ends (power laws at the edges); off for problems with Gaussian tails, and for proxy2d, where they
            biased the fit (see its class).
        disc_per_observable: whether the discriminator has a network per observable (data set)
            rather than one shared through a label input.
        grid_points: default points per axis of the tabulation grid of the training sampler.
        grid_spacing: ``"uniform"`` or ``"clustered"`` (Chebyshev–Lobatto, dense at both ends): how
            the tabulation grid's points are spread. Clustered grids resolve power laws at the
            domain's ends: on proxy2d a uniform 128² grid shifts the parameters the sampled
            distribution matches by up to 1.7 standard errors of 100k events, a clustered 64² one
            by at most 0.2 (``tests/test_grid_bias.py``).
        spec_defaults: spec sections that differ from the generic defaults in this problem's
            standard closure spec (e.g. ``{"name": "closure-x", "training": {"steps": 800}}``).

    A subclass may take all of these from a torch-free :class:`~qcf_studio.engine.problem_catalog.ProblemInfo`
    (``class Proxy1D(Problem, info=PROXY1D)``), which the spec validates against without torch.
    """

    kind: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    truth: ClassVar[tuple[float, ...]]
    lo: ClassVar[tuple[float, ...]]
    hi: ClassVar[tuple[float, ...]]
    qcf_names: ClassVar[tuple[str, ...]]
    observable_names: ClassVar[tuple[str, ...]]
    x_range: ClassVar[tuple[float, float]]
    y_range: ClassVar[tuple[float, float] | None] = None
    core_range: ClassVar[tuple[float, float]]
    description: ClassVar[str] = ""
    normalisation_params: ClassVar[tuple[str, ...]] = ()
    edge_features: ClassVar[bool] = True
    disc_per_observable: ClassVar[bool] = False
    grid_points: ClassVar[int] = 512
    grid_spacing: ClassVar[str] = "uniform"
    spec_defaults: ClassVar[Mapping[str, Any]] = {}
    info: ClassVar[ProblemInfo]

    def __init_subclass__(cls, info: ProblemInfo | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if info is not None:  # the facts live in engine.problem_catalog; the class reads them
            cls.info = info
            for f in fields(info):
                setattr(cls, f.name, getattr(info, f.name))

    @classmethod
    def describe(cls) -> ProblemInfo:
        """The class's data as a :class:`ProblemInfo` (what the torch-free spec validation reads)."""
        if "info" in cls.__dict__:
            return cls.info
        return ProblemInfo(**{f.name: getattr(cls, f.name) for f in fields(ProblemInfo)})

    @property
    def event_dims(self) -> int:
        """Coordinates per event: 1 or 2."""
        return len(self.domain)

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        return domain_of(self.x_range, self.y_range)

    def qcfs(self, theta: Tensor, *grids: Tensor) -> Tensor:
        """QCFs for a batch of parameter sets.

        Arguments:
            theta: parameters, shape ``(B, P)``.
            grids: points of the domain, one 1D tensor per coordinate (``x`` or ``x, y``).

        Returns:
            QCF values, shape ``(B, Q, Gx[, Gy])``.
        """
        raise NotImplementedError

    def observables(self, theta: Tensor, *grids: Tensor) -> Tensor:
        """Observable densities (differential cross sections), shape ``(B, O, Gx[, Gy])``."""
        raise NotImplementedError

    # Simulation (generic for tabulated densities) ----------------------------------------------

    def tabulation_grids(
        self, points: int | None = None, dtype: torch.dtype = torch.float32, spacing: str | None = None
    ) -> tuple[Tensor, ...]:
        """Grids of the training sampler: ``points`` per axis and ``spacing`` (the problem's defaults
        if ``None``)."""
        n = points or self.grid_points
        return tuple(samplers.tabulation_grid(a, b, n, spacing or self.grid_spacing, dtype) for a, b in self.domain)

    def cross_sections(self, theta: Tensor, grids: tuple[Tensor, ...]) -> Tensor:
        """Integrated observables, shape ``(B, O)`` (trapezoid rule on ``grids``)."""
        density = self.observables(theta, *grids)
        if len(grids) == 1:
            return cumulative_trapezoid(density, grids[0])[..., -1]
        return torch.trapezoid(torch.trapezoid(density, grids[1], dim=-1), grids[0], dim=-1)

    def simulate(
        self, theta: Tensor, n: int, generator: torch.Generator | None, grids: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """Truth-level events for each parameter set and observable, differentiable w.r.t. ``theta``.

        Arguments:
            theta: parameters ``(B, P)``.
            n: events per parameter set and observable.
            generator: the random stream.
            grids: tabulation grids (from :meth:`tabulation_grids`).

        Returns:
            ``(events, xsec)``: events ``(B, O, n, D)`` and integrated cross sections ``(B, O)``.
        """
        density = self.observables(theta, *grids)
        b, o = density.shape[:2]
        flat = density.reshape(b * o, *density.shape[2:])
        if len(grids) == 1:
            u = torch.rand((b * o, n), generator=generator, dtype=density.dtype, device=density.device)
            x, xsec = sample_inverse_cdf(flat, grids[0], u)
            events = x[..., None]
        else:
            u = torch.rand((b * o, n, 3), generator=generator, dtype=density.dtype, device=density.device)
            events, xsec = samplers.sample_loits_2d(flat, grids[0], grids[1], u)
        return events.reshape(b, o, n, -1), xsec.reshape(b, o)

    def pseudo_events(self, theta: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Events ``(O, n, D)`` and cross sections ``(O,)`` for one float64 parameter set ``(P,)``.

        Drawn on a fine grid, so the training sampler's grid bias is not baked into the data.
        """
        points = 200_001 if self.event_dims == 1 else 1025
        grids = self.tabulation_grids(points, dtype=torch.float64)
        events, xsec = self.simulate(theta[None], n, generator, grids)
        return events[0], xsec[0]

    def log_density(self, theta: Tensor, events: Tensor) -> Tensor | None:
        """Exact normalised log density of ``events (O, N, D)`` for ``theta (B, P)``: ``(B, O, N)``.

        ``None`` (the default) means "use the tabulated observables": the likelihood fit then
        integrates and interpolates them numerically.
        """
        return None

    # Helpers shared by subclasses ---------------------------------------------------------------

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

    def qcf_grids(self, points: int | None = None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, ...]:
        """Where QCFs are reported: 181 points in 1D, 61 × 61 in 2D."""
        n = points or (181 if self.event_dims == 1 else 61)
        return tuple(torch.linspace(a, b, n, dtype=dtype) for a, b in self.domain)
