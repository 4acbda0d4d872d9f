"""Every registered problem honours the Problem contract; the specific problems match design.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qcf_studio.engine.data.pseudodata import MeasuredData, make_pseudo_data
from qcf_studio.engine.problems import Problem, get_problem, problem_kinds, register_problem
from qcf_studio.engine.spec import default_spec, parse_spec


@pytest.mark.parametrize("kind", problem_kinds())
def test_problem_contract(kind):
    p = get_problem(kind)
    n_q, n_o = len(p.qcf_names), len(p.observable_names)
    lo, hi = p.bounds(torch.float64)
    truth = p.truth_tensor(torch.float64)
    assert truth.shape == (len(p.param_names),) and bool(((lo <= truth) & (truth <= hi)).all())
    theta = torch.stack([truth, lo + 0.3 * (hi - lo)])
    grids = p.qcf_grids(points=33)
    shape = tuple(g.shape[0] for g in grids)
    assert p.qcfs(theta, *grids).shape == (2, n_q, *shape)
    dens = p.observables(theta, *grids)
    assert dens.shape == (2, n_o, *shape) and bool((dens >= 0).all())

    # Simulated events: shape, inside the domain, differentiable w.r.t. θ, seeded.
    theta = theta.float().requires_grad_(True)
    tab = p.tabulation_grids()
    gen = torch.Generator().manual_seed(0)
    events, xsec = p.simulate(theta, 500, gen, tab)
    assert events.shape == (2, n_o, 500, p.event_dims) and xsec.shape == (2, n_o)
    if p.log_density(theta.detach(), events[0].detach()) is None:  # tabulated: events stay on the domain
        for d, (a, b) in enumerate(p.domain):
            assert float(events[..., d].detach().min()) >= a and float(events[..., d].detach().max()) <= b
    (grad,) = torch.autograd.grad(events.sum(), theta)
    assert bool((grad.abs().sum(1) > 0).all())
    again, _ = p.simulate(theta, 500, torch.Generator().manual_seed(0), tab)
    torch.testing.assert_close(events, again)

    # Pseudo-data round trip through NetCDF form; the standard spec validates.
    data = make_pseudo_data(p, np.asarray(p.truth), 2000, seed=4)
    assert data.events.shape == (n_o, 2000, p.event_dims)
    back = MeasuredData.from_xarray(data.to_xarray())
    np.testing.assert_array_equal(back.events, data.events)
    assert default_spec(kind).problem.kind == kind


def test_proxy2d_matches_the_formula():
    p = get_problem("proxy2d")
    x, y = torch.tensor([0.2, 0.7], dtype=torch.float64), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    rho = p.qcfs(p.truth_tensor(torch.float64)[None], x, y)[0, 0]
    p0, p1, p2, p3, p4 = p.truth
    for i, xi in enumerate(x.tolist()):
        for j, yj in enumerate(y.tolist()):
            expect = xi**p0 * (1 - xi) ** p1 * yj**p2 * (1 - yj) ** p3 * (1 + p4 * xi * yj)
            assert math.isclose(float(rho[i, j]), expect, rel_tol=1e-12)


def test_multiset2d_data_sets_are_the_given_mixtures():
    p = get_problem("multiset2d")
    assert len(p.param_names) == 15 and p.param_names[5] == "B_p0"
    grids = p.tabulation_grids(257, dtype=torch.float64)
    theta = p.truth_tensor(torch.float64)[None]
    sets = p.observables(theta, *grids)[0]  # (4, G, G)
    dens = p.qcfs(theta, *grids)[0]  # (3, G, G)
    norm = torch.trapezoid(torch.trapezoid(dens, grids[1], dim=-1), grids[0], dim=-1)
    m = torch.tensor(p.mixing, dtype=torch.float64)
    torch.testing.assert_close(sets, torch.einsum("jk,kxy->jxy", m, dens / norm[:, None, None]))
    assert torch.allclose(p.cross_sections(theta, grids)[0], torch.ones(4, dtype=torch.float64))


def test_gauss6_events_have_the_stated_means_and_unit_width():
    p = get_problem("gauss6")
    theta = p.truth_tensor()[None]
    events, _ = p.simulate(theta, 20_000, torch.Generator().manual_seed(1), p.tabulation_grids())
    c = np.array([(1, 1), (-2, 2), (-9.46, 1.67), (4.20, 0.74), (0.921, 1.98), (-1.10, 1.90)])
    np.testing.assert_allclose(events[0, :, :, 0].mean(1).numpy(), c @ np.array([2.0, 1.0]), atol=0.03)
    np.testing.assert_allclose(events[0, :, :, 0].std(1).numpy(), 1.0, atol=0.02)


def test_a_user_problem_registers_with_one_class():
    @register_problem
    class Exponential(Problem):
        kind = "test-exponential"
        description = "exp(−k x) on [0, 5]"
        param_names = ("k",)
        truth = (1.5,)
        lo = (0.1,)
        hi = (4.0,)
        qcf_names = ("f",)
        observable_names = ("f",)
        x_range = (0.0, 5.0)
        core_range = (0.0, 3.0)

        def qcfs(self, theta, x):
            return torch.exp(-theta[:, :1, None] * x)

        def observables(self, theta, x):
            return self.qcfs(theta, x)

    try:
        assert "test-exponential" in problem_kinds()
        spec = parse_spec({"problem": {"kind": "test-exponential", "events": 1000}})
        assert spec.problem.truth == {"k": 1.5}
        data = make_pseudo_data(get_problem("test-exponential"), np.array([1.5]), 20_000, seed=0)
        assert abs(data.events.mean() - (1 / 1.5 - 5 * math.exp(-7.5) / (1 - math.exp(-7.5)))) < 0.02
    finally:
        from qcf_studio.engine.problems import _REGISTRY

        _REGISTRY.pop("test-exponential")
