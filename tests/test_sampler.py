"""The differentiable inverse-CDF sampler: distribution, determinism and gradients."""

import numpy as np
import torch

from engine.samplers import sample_inverse_cdf


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
