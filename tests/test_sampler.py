"""Differentiable samplers: the 1D inverse-CDF checks, one contract test run over every registered
sampler, and measured biases against densities whose integrals are known exactly."""

import math

import numpy as np
import pytest
import torch

from qcf_studio.engine.samplers import SAMPLERS, cumulative_trapezoid, draw, sample_inverse_cdf, sample_loits_2d


def _beta_density(theta: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    a, b = theta[:, 0:1], theta[:, 1:2]
    return torch.exp(a * torch.log(grid) + b * torch.log(torch.clamp(1 - grid, min=1e-12)))


def test_sampler_gradient_matches_finite_differences():
    grid = torch.linspace(0.1, 1.0, 257, dtype=torch.float64)
    theta = torch.tensor([[-0.5, 3.0], [0.3, 1.5]], dtype=torch.float64, requires_grad=True)
    u = torch.rand((2, 400), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.randn(2, 400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def objective(t):
        x, integral = sample_inverse_cdf(_beta_density(t, grid), grid, u)
        return (weights * x).sum() + integral.sum()

    objective(theta).backward()
    eps = 1e-6
    fd = torch.zeros_like(theta)
    with torch.no_grad():
        for i in range(theta.shape[0]):
            for j in range(theta.shape[1]):
                tp, tm = theta.detach().clone(), theta.detach().clone()
                tp[i, j] += eps
                tm[i, j] -= eps
                fd[i, j] = (objective(tp) - objective(tm)) / (2 * eps)
    torch.testing.assert_close(theta.grad, fd, rtol=1e-4, atol=1e-6)


def test_sampler_events_follow_the_density():
    # x^-0.5 on [0.1, 1]: CDF (sqrt(x) - sqrt(0.1)) / (1 - sqrt(0.1)); Kolmogorov-Smirnov distance.
    grid = torch.linspace(0.1, 1.0, 513, dtype=torch.float64)
    density = grid[None] ** -0.5
    u = torch.rand((1, 200_000), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x, integral = sample_inverse_cdf(density, grid, u)
    xs = np.sort(x.numpy()[0])
    exact = (np.sqrt(xs) - np.sqrt(0.1)) / (1 - np.sqrt(0.1))
    ks = np.max(np.abs(exact - np.arange(1, xs.size + 1) / xs.size))
    assert ks < 1.36 / np.sqrt(xs.size) * 1.5  # well inside the 95% KS band (with grid bias)
    assert abs(float(integral[0]) - 2 * (1 - np.sqrt(0.1))) < 1e-5
    assert xs.min() >= 0.1 and xs.max() <= 1.0


def test_sampler_fails_ks_for_a_wrong_density():
    # The same KS check rejects events drawn from a different exponent: the test can fail.
    grid = torch.linspace(0.1, 1.0, 513, dtype=torch.float64)
    u = torch.rand((1, 200_000), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x, _ = sample_inverse_cdf(grid[None] ** -0.45, grid, u)
    xs = np.sort(x.numpy()[0])
    exact = (np.sqrt(xs) - np.sqrt(0.1)) / (1 - np.sqrt(0.1))
    assert np.max(np.abs(exact - np.arange(1, xs.size + 1) / xs.size)) > 1.36 / np.sqrt(xs.size) * 1.5


def test_sampler_is_deterministic_under_a_seed_and_vectorised_over_the_batch():
    grid = torch.linspace(0.1, 1.0, 129)
    theta = torch.tensor([[-0.5, 3.0], [0.5, 1.0], [0.0, 4.0]])
    u1 = torch.rand((3, 1000), generator=torch.Generator().manual_seed(7))
    u2 = torch.rand((3, 1000), generator=torch.Generator().manual_seed(7))
    x1, _ = sample_inverse_cdf(_beta_density(theta, grid), grid, u1)
    x2, _ = sample_inverse_cdf(_beta_density(theta, grid), grid, u2)
    assert x1.shape == (3, 1000)
    torch.testing.assert_close(x1, x2)
    # Rows are independent: row 1 alone gives the same events as inside the batch.
    x_row, _ = sample_inverse_cdf(_beta_density(theta[1:2], grid), grid, u1[1:2])
    torch.testing.assert_close(x_row[0], x1[1])


def test_cell_search_matches_searchsorted_in_heavy_tails():
    # The guide-table search must agree with searchsorted, also where many near-empty cells share a
    # bucket (the bisection path) and at u = 0 and u just below 1.
    grid = torch.linspace(0.1, 1.0, 2049)
    theta = torch.tensor([[-0.9, 30.0], [0.5, 0.5]])
    u = torch.rand((2, 100_000), generator=torch.Generator().manual_seed(3))
    u[:, 0], u[:, 1] = 0.0, 1 - 2**-24
    x, _ = sample_inverse_cdf(_beta_density(theta, grid), grid, u)
    cdf = cumulative_trapezoid(_beta_density(theta, grid), grid)
    cdf = cdf / cdf[:, -1:]
    cell = (torch.searchsorted(cdf, u, right=True) - 1).clamp(max=grid.shape[0] - 2)
    assert bool(((x >= grid[cell] - 1e-6) & (x <= grid[cell + 1] + 1e-6)).all())


@pytest.mark.parametrize("width", [2, 3, 64, 100, 4096])
def test_branch_free_bisection_matches_searchsorted(width):
    """The small-draw cell search agrees with searchsorted (right) on random edges with ties,
    at u = 0 and just below 1, for widths that are and are not powers of two."""
    from qcf_studio.engine.samplers.cellsearch import _bisect

    g = torch.Generator().manual_seed(width)
    rows, n = 5, 300
    cum = torch.rand((rows, width), generator=g).sort(1).values
    cum[:, 0] = 0.0
    cum[:, -1] = math.inf
    u = torch.rand((rows, n), generator=g)
    u[:, 0], u[:, 1] = 0.0, 1 - 2**-24
    if width >= 8:
        tie = width // 2
        cum[:, tie : tie + 3] = cum[:, tie : tie + 1]
        u[:, 2] = cum[:, tie]  # a target on tied edges
    ref = torch.searchsorted(cum, u, right=True) - 1 + (torch.arange(rows) * width)[:, None]
    assert torch.equal(_bisect(cum, u), ref.reshape(-1))


# Contract of every registered sampler -----------------------------------------------------------
#
# Test family with exact integrals: ρ(x) = Π_d x_d^a_d (1 − x_d)^b_d (1 + c Π_d x_d) on
# [0.001, 0.999]^D, θ = (a_1, b_1, ..., a_D, b_D, c): its moments and marginal CDFs are sums of
# products of 1D integrals, tabulated here on 200 001 points. In 2D this is the proxy2d form at its
# truth. c = 0.75 correlates the coordinates.

LO, HI = 0.001, 0.999
EXPONENTS = {1: (0.5, 3.0), 2: (0.5, 3.0, 0.3, 4.0), 3: (1.5, 3.0, 1.3, 4.0, 1.8, 2.5)}
GRID_POINTS = {1: 513, 2: 129, 3: 49}
# Measured grid biases (2^17 scrambled Sobol points, float64), asserted below with some margin:
# largest marginal KS distance, relative error of the integral, of the gradient of E[φ].
BIAS = {1: (1e-4, 1e-4, 2e-3), 2: (2e-3, 3e-3, 5e-3), 3: (2e-3, 1e-3, 1e-2)}


def _theta(dims: int, coupling: float = 0.75) -> np.ndarray:
    return np.array(EXPONENTS[dims] + (coupling,))


def _density(theta: torch.Tensor, grids: tuple[torch.Tensor, ...]) -> torch.Tensor:
    dims = len(grids)
    out, prod = 1.0, 1.0
    for k, g in enumerate(grids):
        shape = [1] * (dims + 1)
        shape[k + 1] = -1
        a, b = theta[:, 2 * k].view([-1] + [1] * dims), theta[:, 2 * k + 1].view([-1] + [1] * dims)
        out = out * torch.exp(a * torch.log(g.view(shape)) + b * torch.log1p(-g.view(shape)))
        prod = prod * g.view(shape)
    return out * (1 + theta[:, -1].view([-1] + [1] * dims) * prod)


def _grids(dims: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(torch.linspace(LO, HI, GRID_POINTS[dims], dtype=dtype) for _ in range(dims))


class _Exact:
    """Moments, marginal CDFs and bin probabilities of the test family at one θ."""

    def __init__(self, theta: np.ndarray, points: int = 200_001):
        self.dims, self.c = (len(theta) - 1) // 2, theta[-1]
        self.x = np.linspace(LO, HI, points)
        self.running = []  # running[k][m] = ∫_LO^x t^(a_k + m) (1 − t)^b_k dt, m = 0..3
        for k in range(self.dims):
            f = self.x ** (theta[2 * k] + np.arange(4)[:, None]) * (1 - self.x) ** theta[2 * k + 1]
            cells = 0.5 * (f[:, 1:] + f[:, :-1]) * np.diff(self.x)
            self.running.append(np.concatenate([np.zeros((4, 1)), np.cumsum(cells, axis=1)], axis=1))
        self.z = self._raw((0,) * self.dims)

    def _raw(self, m: tuple[int, ...]) -> float:
        full = [r[:, -1] for r in self.running]
        return np.prod([full[k][m[k]] for k in range(self.dims)]) + self.c * np.prod(
            [full[k][m[k] + 1] for k in range(self.dims)]
        )

    def moment(self, m: tuple[int, ...]) -> float:
        return self._raw(m) / self.z

    def cdf(self, k: int, x: np.ndarray) -> np.ndarray:
        others = [[r[m, -1] for j, r in enumerate(self.running) if j != k] for m in (0, 1)]
        parts = [np.interp(x, self.x, self.running[k][m]) * np.prod(others[m]) for m in (0, 1)]
        return (parts[0] + self.c * parts[1]) / self.z

    def bin_probabilities(self, edges: list[np.ndarray]) -> np.ndarray:
        terms = []
        for m in (0, 1):
            t = np.ones(())
            for k, e in enumerate(edges):
                t = np.multiply.outer(t, np.diff(np.interp(e, self.x, self.running[k][m])))
            terms.append(t)
        return (terms[0] + self.c * terms[1]) / self.z

    def phi(self) -> float:
        """E[φ] for φ(x) = Σ_d x_d + x_1 x_D."""
        unit = [tuple(int(i == d) for i in range(self.dims)) for d in range(self.dims)]
        corner = [0] * self.dims
        corner[0] += 1
        corner[-1] += 1
        return sum(self.moment(m) for m in unit) + self.moment(tuple(corner))


def _goodness_of_fit(events: np.ndarray, exact: _Exact) -> dict[str, bool]:
    """KS on every marginal, binned χ² of the joint distribution, and each pair's covariance."""
    n, dims = events.shape
    ks = max(np.max(np.abs(exact.cdf(k, np.sort(events[:, k])) - np.arange(1, n + 1) / n)) for k in range(dims))
    bins = {1: 50, 2: 10, 3: 5}[dims]  # equal-probability bins along each axis
    quantiles = np.linspace(0, 1, bins + 1)
    edges = [np.interp(quantiles, exact.cdf(k, exact.x), exact.x) for k in range(dims)]
    counts = np.histogramdd(events, bins=[np.concatenate([[0.0], e[1:-1], [1.0]]) for e in edges])[0]
    expected = n * exact.bin_probabilities(edges)
    chi2, dof = float(((counts - expected) ** 2 / expected).sum()), counts.size - 1
    pulls = [0.0]
    for a in range(dims):
        for b in range(a + 1, dims):
            prod = (events[:, a] - events[:, a].mean()) * (events[:, b] - events[:, b].mean())
            m, ma, mb = [0] * dims, [0] * dims, [0] * dims
            m[a] = m[b] = ma[a] = mb[b] = 1
            cov = exact.moment(tuple(m)) - exact.moment(tuple(ma)) * exact.moment(tuple(mb))
            pulls.append(abs(prod.mean() - cov) / (prod.std() / np.sqrt(n)))
    return {"ks": ks < 1.5 * 1.36 / np.sqrt(n), "chi2": chi2 < dof + 5 * np.sqrt(2 * dof), "covariance": max(pulls) < 5}


def _sobol(sampler, dims: int, n: int, seed: int) -> torch.Tensor:
    engine = torch.quasirandom.SobolEngine(sampler.n_uniforms(dims), scramble=True, seed=seed)
    return engine.draw(n, dtype=torch.float64)


def _cases():
    for name, sampler in SAMPLERS.items():
        for dims in [sampler.dims] if sampler.dims else [1, 2, 3]:
            yield pytest.param(name, dims, id=f"{name}-{dims}d")


@pytest.mark.parametrize("name,dims", list(_cases()))
def test_sampler_contract(name, dims):
    sampler = SAMPLERS[name]
    k = sampler.n_uniforms(dims)

    # Shapes and dtypes; events inside the grid's box; determinism under a seed.
    for dtype in (torch.float32, torch.float64):
        grids = _grids(dims, dtype)
        theta = torch.tensor(np.stack([_theta(dims), _theta(dims, 0.2) + 0.1]), dtype=dtype)
        density = _density(theta, grids)
        events, integral = draw(name, density, grids, 700, torch.Generator().manual_seed(0))
        assert events.shape == (2, 700, dims) and integral.shape == (2,)
        assert events.dtype == integral.dtype == dtype
        assert bool(((events >= LO) & (events <= HI)).all())
        again, _ = draw(name, density, grids, 700, torch.Generator().manual_seed(0))
        assert torch.equal(events, again)
        # Rows are independent: row 1 alone gives the same events as inside the batch.
        u = torch.rand((2, 700, k), generator=torch.Generator().manual_seed(1), dtype=dtype)
        both, _ = sampler.sample(density, grids, u)
        alone, _ = sampler.sample(density[1:], grids, u[1:])
        torch.testing.assert_close(alone[0], both[1])

    # Distribution: 100 000 float32 events pass KS, χ² and covariance checks against the exact
    # density; the same checks reject a wrong density (exponent a_1 off by 0.05; in 2D and 3D also
    # a different coupling c, which the covariance check alone must catch).
    grids32 = _grids(dims, torch.float32)
    exact = _Exact(_theta(dims))
    u = torch.rand((1, 100_000, k), generator=torch.Generator().manual_seed(2))

    def checks(theta: np.ndarray) -> dict[str, bool]:
        events, _ = sampler.sample(_density(torch.tensor(theta[None], dtype=torch.float32), grids32), grids32, u)
        return _goodness_of_fit(events[0].double().numpy(), exact)

    assert all(checks(_theta(dims)).values())
    assert not all(checks(_theta(dims) + 0.05 * np.eye(2 * dims + 1)[0]).values())
    if dims > 1:
        assert not checks(_theta(dims, coupling=-0.5))["covariance"]

    # Grid bias, measured with scrambled Sobol points (quasi-random: tiny sampling noise).
    grids = _grids(dims, torch.float64)
    events, integral = sampler.sample(
        _density(torch.tensor(_theta(dims))[None], grids), grids, _sobol(sampler, dims, 2**17, seed=1)[None]
    )
    events = events[0].numpy()
    n = events.shape[0]
    ks = max(np.max(np.abs(exact.cdf(d, np.sort(events[:, d])) - np.arange(1, n + 1) / n)) for d in range(dims))
    ks_bias, integral_bias, gradient_bias = BIAS[dims]
    assert ks < ks_bias
    assert abs(float(integral[0]) / exact.z - 1) < integral_bias

    # Gradients, float64. The integral's gradient equals central finite differences.
    theta0 = torch.tensor(np.stack([_theta(dims), _theta(dims, 0.2) + 0.1]))
    eps = 1e-6
    theta = theta0.clone().requires_grad_(True)
    u64 = torch.rand((2, 300, k), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = torch.randn((2, 300, dims), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    events, integral = sampler.sample(_density(theta, grids), grids, u64)
    grad_events, grad_integral = (
        torch.autograd.grad(v, theta, retain_graph=True)[0] for v in ((w * events).sum(), integral.sum())
    )
    fd_events, fd_integral = torch.zeros_like(theta0), torch.zeros_like(theta0)
    with torch.no_grad():
        for i in range(theta0.shape[0]):
            for j in range(theta0.shape[1]):
                step = torch.zeros_like(theta0)
                step[i, j] = eps
                (ep, ip), (em, im) = (sampler.sample(_density(theta0 + s, grids), grids, u64) for s in (step, -step))
                fd_events[i, j] = ((w * ep).sum() - (w * em).sum()) / (2 * eps)
                fd_integral[i, j] = (ip.sum() - im.sum()) / (2 * eps)
    torch.testing.assert_close(grad_integral, fd_integral, rtol=1e-5, atol=1e-9)
    if sampler.pathwise:  # each event's gradient is the derivative of its map at fixed uniforms
        torch.testing.assert_close(grad_events, fd_events, rtol=1e-4, atol=1e-6)

    # In expectation, for every sampler: the gradient of E[φ], φ = Σ_d x_d + x_1 x_D, averaged
    # over 8 independent scrambled-Sobol replicates of 2^14 events, matches central finite
    # differences of the exact E[φ] within 5 standard errors plus the grid bias.
    reps = 8
    theta = torch.tensor(_theta(dims)).repeat(reps, 1).requires_grad_(True)
    u = torch.stack([_sobol(sampler, dims, 2**14, seed=10 + r) for r in range(reps)])
    events, _ = sampler.sample(_density(theta, grids), grids, u)
    (events.sum(-1) + events[..., 0] * events[..., -1]).mean(1).sum().backward()
    mean, se = theta.grad.mean(0).numpy(), theta.grad.std(0).numpy() / np.sqrt(reps)
    steps = 1e-5 * np.eye(2 * dims + 1)
    fd = np.array([(_Exact(_theta(dims) + s).phi() - _Exact(_theta(dims) - s).phi()) / 2e-5 for s in steps])
    assert np.all(np.abs(mean - fd) <= 5 * se + gradient_bias * np.abs(fd)), (mean / fd, (mean - fd) / se)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")  # torch.func internals
def test_loits_local_gradient_is_what_finite_differences_see_but_misses_the_allocation():
    # "local": the derivative of the LOITS map with the cell allocation fixed. Each event's
    # derivative (forward mode) matches finite differences, except for the rare event whose cell
    # changes between θ ± ε: those jumps are the flow of events between cells that the local
    # gradient misses. In expectation that flow dominates: on the 129² grid the local gradient of
    # E[x] w.r.t. the x exponent is below 1e-3 of the exact one (measured: ~2e-4), which is why
    # "transport" is the default.
    grids = _grids(2, torch.float64)
    theta = torch.tensor(_theta(2))[None].repeat(2, 1)
    u = torch.rand((2, 2000, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    tangent = torch.zeros_like(theta)
    tangent[0, 0] = 1.0

    def events(t: torch.Tensor) -> torch.Tensor:
        return sample_loits_2d(_density(t, grids), *grids, u, gradient="local")[0]

    _, derivative = torch.func.jvp(events, (theta,), (tangent,))
    eps = 1e-7
    fd = (events(theta + eps * tangent) - events(theta - eps * tangent)) / (2 * eps)
    agree = ((fd - derivative).abs() < 1e-6 * (1 + derivative.abs())).all(-1)
    assert float(agree.double().mean()) > 0.99 and bool(agree[1].all())

    reps = 4
    theta = torch.tensor(_theta(2)).repeat(reps, 1).requires_grad_(True)
    u = torch.rand((reps, 2**15, 3), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grads = {}
    for mode in ("local", "transport"):
        events, _ = sample_loits_2d(_density(theta, grids), *grids, u, gradient=mode)
        grads[mode] = float(torch.autograd.grad(events[..., 0].mean(1).sum(), theta)[0][:, 0].mean())
    s = 1e-5 * np.eye(5)[0]
    exact = (_Exact(_theta(2) + s).moment((1, 0)) - _Exact(_theta(2) - s).moment((1, 0))) / 2e-5
    assert abs(grads["transport"] / exact - 1) < 0.01
    assert abs(grads["local"] / exact) < 1e-3


def test_the_transport_backward_takes_gradients_through_the_running_integrals_as_autograd_would():
    """LOITS's backward maps table gradients to the density by hand (one autograd node); check
    that adjoint against autograd of ``cumulative_trapezoid`` on an uneven grid, along both axes."""
    from qcf_studio.engine.samplers.loits import _cumulative_trapezoid_adjoint

    gen = torch.Generator().manual_seed(3)
    grid = torch.sort(torch.rand(9, generator=gen, dtype=torch.float64)).values
    f = torch.rand(4, 7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 7, 9, generator=gen, dtype=torch.float64)
    (expected,) = torch.autograd.grad((cumulative_trapezoid(f, grid) * w).sum(), f)
    assert torch.allclose(_cumulative_trapezoid_adjoint(w, grid[1:] - grid[:-1]), expected, rtol=1e-12, atol=1e-14)
