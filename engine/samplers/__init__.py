"""Differentiable inverse-transform sampling of densities tabulated on a grid.

The events' positions are smooth functions of the density values, so gradients flow from the
events back to the parameters θ that produced the density (the reparameterisation trick for a
tabulated density). Three samplers, all vectorised over events and batch rows:

- :func:`sample_inverse_cdf` (1D): piecewise-linear inversion of the trapezoid CDF.
- :func:`sample_loits_2d` (2D): LOITS, local orthogonal inverse-transform sampling
  (arXiv:2507.15768): a cell is drawn from the cell masses, then x and y inside it from local
  1D CDFs of the bilinear interpolant.
- :func:`sample_sequential_nd` (any D): x1 from its marginal, x2 | x1 from the interpolated
  conditional slice, and so on (the Knothe–Rosenblatt map of the tabulated density).

:data:`SAMPLERS` registers them behind one call, ``sample(density, grids, uniforms)`` →
``(events (B, N, D), integral (B,))``; :func:`draw` makes the uniforms itself.

Cell search. ``torch.searchsorted`` costs more per event on a CPU core than all the rest of a
1D forward + backward pass (docs/benchmarks.md, "Sampler and memory"). On the CPU the cell is
therefore found with a guide table (the first cell of each of K ≈ 1-2 × cells equal-probability buckets, built with one
``bincount``), one linear step and an exact bisection for the few events in buckets that hold
several cell edges. The result is exactly that of ``searchsorted``, which is used on other
devices and for small draws.

Known biases, measured against exact densities with 2^18 scrambled Sobol points in float64
(``tests/test_sampler.py`` asserts bounds on them for every registered sampler):

- Grid resolution, all samplers: the density is integrated with the trapezoid rule and
  interpolated between grid points (constant inside a 1D cell; bilinear inside a LOITS cell;
  constant along each axis and linear between slices for the sequential sampler), so features
  narrower than a cell are smeared out. proxy1d, 512 points on [0.1, 1]: largest distance between
  the sampled and exact CDFs 3e-5. The proxy2d form x^0.5 (1−x)^3 y^0.3 (1−y)^4 (1 + 0.75 x y) on
  a uniform 129² grid over [0.001, 0.999]²: marginal CDFs within 1.2e-3, integral −1.9e-3,
  covariance of (x, y) within 2.4e-3 (relative), gradients of expectations within 0.3 %; most of
  it from the first cells, where y^0.3 and x^0.5 are steep. Small as they look, such biases move a
  fit of 100k events by up to 1.7 standard errors (:mod:`qcf_studio.engine.problems.gridbias`); the 2D problems
  therefore train on clustered grids (:func:`clustered_grid`, dense at both ends), 64² of which
  move it by at most 0.2.
  3D, x^1.5 (1−x)^3 y^1.3 (1−y)^4 z^1.8 (1−z)^2.5 (1 + 0.75 x y z), 49³ points: marginal CDFs
  within 1.1e-3, integral −4e-4, gradients within 0.5 %.
- Within-cell independence: none. LOITS draws y from the conditional at the drawn x, so it samples
  the bilinear interpolant exactly; the sequential sampler interpolates the conditional slices.
- Allocation without gradient: the cell index is piecewise constant in θ. For the 1D and
  sequential samplers this is exact (their maps are continuous across cell edges). For LOITS it
  is not: the within-cell ("local") derivative misses the flow of events between cells, which
  dominates on fine grids (proxy2d form, 129² grid: the local gradient of E[x] w.r.t. the x
  exponent is about 2e-4 of the exact one). LOITS therefore uses by default the *transport*
  gradient (``gradient="transport"``): the implicit reparameterisation dx/dθ = −∂θF(x)/p(x)
  through the marginal CDF of x and the conditional CDF of y given x. Its expectation is the exact
  derivative of expectations under the sampled distribution (it is the derivative of the
  Knothe–Rosenblatt map at each event's quantiles); it is not the finite difference of the LOITS
  map itself, which jumps when an event changes cell.

References:
    LOITS: K. Braga et al., "Toward an event-level analysis of hadron structure using
    differential programming", arXiv:2507.15768.
    Implicit reparameterisation gradients, Figurnov, Mohamed, Mnih, NeurIPS 2018,
    arXiv:1805.08498.

Modules, one job each:

- ``grids``: :data:`GRID_SPACINGS`, :func:`clustered_grid`, :func:`tabulation_grid`,
  :func:`trapezoid_weights` and :func:`cumulative_trapezoid`;
- ``cellsearch``: the cell search (``_locate``, with its guide table of ``_bucket_count`` buckets);
- ``inverse_cdf``: :func:`sample_inverse_cdf` (1D);
- ``loits``: :func:`sample_loits_2d` (2D) and its transport gradient;
- ``sequential``: :func:`sample_sequential_nd` (any D);
- ``registry``: :class:`Sampler`, :data:`SAMPLERS`, :func:`register_sampler` and :func:`draw`.
"""

from __future__ import annotations

# The private names stay reachable as engine.samplers._locate etc. Each module looks up what it
# imported in its own namespace: to monkeypatch, patch the module that uses the name (for
# instance engine.samplers.inverse_cdf._locate), not this package.
from qcf_studio.engine.samplers.cellsearch import _bucket_count as _bucket_count
from qcf_studio.engine.samplers.cellsearch import _locate as _locate
from qcf_studio.engine.samplers.grids import (
    GRID_SPACINGS,
    clustered_grid,
    cumulative_trapezoid,
    tabulation_grid,
    trapezoid_weights,
)
from qcf_studio.engine.samplers.inverse_cdf import _CellAffine as _CellAffine
from qcf_studio.engine.samplers.inverse_cdf import sample_inverse_cdf
from qcf_studio.engine.samplers.loits import _Cell as _Cell
from qcf_studio.engine.samplers.loits import _linear_inverse as _linear_inverse
from qcf_studio.engine.samplers.loits import _Transport as _Transport
from qcf_studio.engine.samplers.loits import sample_loits_2d
from qcf_studio.engine.samplers.registry import SAMPLERS, Sampler, draw, register_sampler
from qcf_studio.engine.samplers.registry import _inverse_cdf_1d as _inverse_cdf_1d
from qcf_studio.engine.samplers.sequential import _interpolate as _interpolate
from qcf_studio.engine.samplers.sequential import _times as _times
from qcf_studio.engine.samplers.sequential import sample_sequential_nd

__all__ = [
    "GRID_SPACINGS",
    "clustered_grid",
    "tabulation_grid",
    "trapezoid_weights",
    "cumulative_trapezoid",
    "sample_inverse_cdf",
    "sample_loits_2d",
    "sample_sequential_nd",
    "Sampler",
    "SAMPLERS",
    "register_sampler",
    "draw",
]
