"""Detector effects: smearing, acceptance, background, learned surrogate, chain and spec section."""

from __future__ import annotations

import contextlib
import math
import time

import pytest
import torch

from qcf_studio.engine.detector import (
    Acceptance,
    Background,
    DetectorChain,
    DetectorConfigError,
    ResolutionSmearing,
    SurrogateSmearing,
    build_detector,
)

DOMAIN_1D = [(0.1, 1.0)]
DOMAIN_2D = [(0.001, 0.999), (0.001, 0.999)]
CHI2_MAX = 2.0  # chi2 per degree of freedom; p ≈ 0.001 for 30 to 40 bins


@contextlib.contextmanager
def one_thread():
    """Train the small surrogate networks on one intra-op thread: on a busy 2-core machine two threads spin
    against other processes and run several times slower; on an idle one the difference is small."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chi2_per_dof(a: torch.Tensor, b: torch.Tensor, edges: torch.Tensor, wa: torch.Tensor | None = None) -> float:
    """Shape comparison of a (weighted) sample ``a`` with an unweighted sample ``b`` (1D, same binning)."""
    wa = torch.ones_like(a) if wa is None else wa
    ia = torch.bucketize(a.contiguous(), edges) - 1
    ib = torch.bucketize(b.contiguous(), edges) - 1
    nb = len(edges) - 1
    ok_a, ok_b = (ia >= 0) & (ia < nb), (ib >= 0) & (ib < nb)
    ha = torch.zeros(nb, dtype=torch.float64).index_add_(0, ia[ok_a], wa[ok_a].double())
    va = torch.zeros(nb, dtype=torch.float64).index_add_(0, ia[ok_a], wa[ok_a].double() ** 2)
    hb = torch.bincount(ib[ok_b], minlength=nb).double()
    sa, sb = ha.sum(), hb.sum()
    var = va / sa**2 + hb / sb**2
    use = var > 0
    return float((((ha / sa - hb / sb) ** 2)[use] / var[use]).sum() / use.sum())


def ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov statistic."""
    a, b = a.flatten().double().sort().values, b.flatten().double().sort().values
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True) / len(a)
    fb = torch.searchsorted(b, grid, right=True) / len(b)
    return float((fa - fb).abs().max())


def truth_1d(n: int, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """A falling test density on [0.1, 1] (x^-0.5 (1 - x)^3-like) by accept-reject."""
    x = 0.1 + 0.9 * torch.rand(8 * n, generator=g, dtype=torch.float64)
    p = x**-0.5 * (1 - x) ** 3 / (0.1**-0.5 * 0.9**3)
    x = x[torch.rand(8 * n, generator=g, dtype=torch.float64) < p][:n]
    return x.to(dtype)


# --- resolution smearing ---------------------------------------------------------------------------------


def test_smearing_keeps_its_old_call_and_speaks_the_effect_interface():
    x = torch.rand(1000, generator=gen(0)) + 0.1
    old = ResolutionSmearing(0.1)(x, generator=gen(1))
    expected = x * (1 - 0.1 * torch.randn(x.shape, generator=gen(1)))
    assert torch.equal(old, expected)
    assert torch.equal(ResolutionSmearing(0.1)(x, gen(1)), expected)  # positional generator
    w = torch.ones(1000)
    new, w_out = ResolutionSmearing(0.1)(x, w, gen(1))
    assert torch.equal(new, expected) and w_out is w
    assert torch.equal(ResolutionSmearing(0.1).apply_to_data(x, gen(1)), expected)


# --- acceptance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [1, 2])
def test_weighted_acceptance_matches_accept_reject(dims):
    n = 200_000
    acc = Acceptance(turn_on=0.3, width=0.08, max=0.9, dims=dims)
    if dims == 1:
        gen_ev, data_ev = truth_1d(n, gen(1)), truth_1d(n, gen(2), torch.float64)
        edges = torch.linspace(0.1, 1.0, 41, dtype=torch.float64)
    else:
        gen_ev = torch.rand(n, 2, generator=gen(1))
        data_ev = torch.rand(n, 2, generator=gen(2), dtype=torch.float64)
        edges = torch.linspace(0.0, 1.0, 31, dtype=torch.float64)
    ev, w = acc(gen_ev, None, gen(3))
    assert ev is gen_ev and w.shape == (n,) and w.dtype == torch.float32
    kept = acc.apply_to_data(data_ev, gen(4))
    assert kept.dtype == torch.float64 and kept.ndim == (2 if dims == 2 else 1)
    # overall efficiency: mean weight vs kept fraction
    assert abs(float(w.mean()) - kept.shape[0] / n) < 0.005
    for d in range(dims):
        a = ev if dims == 1 else ev[:, d]
        b = kept if dims == 1 else kept[:, d]
        assert chi2_per_dof(a.double(), b, edges, w) < CHI2_MAX
    if dims == 2:  # the joint distribution too: the product x*y
        assert chi2_per_dof((ev[:, 0] * ev[:, 1]).double(), kept[:, 0] * kept[:, 1], edges, w) < CHI2_MAX
    # a wrong efficiency is caught by the same comparison
    assert chi2_per_dof(ev.double().flatten(), kept.flatten(), edges) > 5


def test_acceptance_weights_are_differentiable_and_match_finite_differences():
    acc = Acceptance(turn_on=[0.3, 0.5], width=[0.05, 0.1], max=0.8, dims=2)
    x = torch.rand(16, 2, generator=gen(0), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: acc(e)[1], (x,))
    # explicit finite differences of ε in each coordinate
    w = acc(x)[1]
    (grad,) = torch.autograd.grad(w.sum(), x)
    h = 1e-6
    for d in range(2):
        dx = torch.zeros_like(x)
        dx[:, d] = h
        fd = (acc.efficiency(x + dx) - acc.efficiency(x - dx)) / (2 * h)
        torch.testing.assert_close(grad[:, d], fd.detach(), rtol=1e-6, atol=1e-9)
    # weights multiply incoming weights; 1D layout
    acc1 = Acceptance(0.3, 0.05)
    x1 = torch.linspace(0.1, 1, 10)
    _, w1 = acc1(x1, torch.full((10,), 2.0))
    torch.testing.assert_close(w1, 2 * torch.sigmoid((x1 - 0.3) / 0.05))


def test_accept_reject_data_with_a_batch_shape_stays_rectangular():
    acc = Acceptance(0.5, 0.1, dims=1, coord_axis=True)  # the engine's (O, N, 1) layout
    x = torch.rand(3, 10_000, 1, generator=gen(0), dtype=torch.float64)
    kept = acc.apply_to_data(x, gen(1))
    assert kept.shape[0] == 3 and kept.shape[2] == 1 and 4000 < kept.shape[1] < 6000
    # the kept events are events of the input set, in their order
    for o in range(3):
        assert torch.isin(kept[o, :, 0], x[o, :, 0]).all()


# --- background --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, slope", [("uniform", None), ("exponential", -3.0), ("exponential", 4.0)])
def test_background_replaces_the_fraction_with_the_shape(shape, slope):
    n, f = 100_000, 0.15
    kw = {} if slope is None else {"slope": slope}
    bg = Background(DOMAIN_1D, f, shape, **kw)
    signal = torch.full((2, n), -5.0, requires_grad=True)  # outside the domain: background is what lands inside
    out, w = bg(signal, torch.ones(2, n), gen(0))
    replaced = out > -5
    assert int(replaced[0].sum()) == int(replaced[1].sum()) == round(f * n)
    assert torch.equal(w, torch.ones(2, n))
    # the replaced events carry no gradient, the kept ones pass it through unchanged
    (g,) = torch.autograd.grad(out.sum(), signal)
    assert torch.equal(g, (~replaced).float())
    # the shape: histogram vs the exact density
    b = out[replaced].double()
    edges = torch.linspace(0.1, 1.0, 31, dtype=torch.float64)
    counts = torch.histc(b, 30, 0.1, 1.0)
    centers = 0.5 * (edges[1:] + edges[:-1])
    s = 0.0 if slope is None else slope
    cdf = (lambda x: (x - 0.1) / 0.9) if s == 0 else (lambda x: torch.expm1(s * (x - 0.1)) / math.expm1(s * 0.9))
    expected = len(b) * (cdf(edges[1:]) - cdf(edges[:-1]))
    assert float(((counts - expected) ** 2 / expected).sum() / 30) < CHI2_MAX
    # the density integrates to one and matches the bin contents
    dens = bg.density(centers)
    torch.testing.assert_close(dens * 0.03 * len(b), expected, rtol=2e-3, atol=0)


def test_background_2d_weights_and_data():
    bg = Background(DOMAIN_2D, 0.2, "exponential", slope=[-2.0, 1.0])
    ev = torch.full((4, 5000, 2), 5.0)
    w = torch.rand(4, 5000, generator=gen(0))
    out, w2 = bg(ev, w, gen(1))
    rep = (out < 2).all(-1)
    assert (rep.sum(-1) == 1000).all() and ((out < 2).any(-1) == rep).all()
    # replaced events get the mean weight of the kept ones: background is the fraction f of the weight too
    torch.testing.assert_close(w2[rep].view(4, -1), w[~rep].view(4, -1).mean(-1, keepdim=True).expand(4, 1000))
    torch.testing.assert_close(w2[rep].view(4, -1).sum(-1) / w2.sum(-1), torch.full((4,), 0.2))
    data = bg.apply_to_data(ev.double(), gen(2))
    assert data.dtype == torch.float64 and int((data < 2).all(-1).sum()) == 4000
    # slopes per coordinate: the means of truncated exponentials
    b = out[rep].double()
    for d, s in enumerate([-2.0, 1.0]):
        lo, hi = DOMAIN_2D[d]
        mean = (hi * math.exp(s * hi) - lo * math.exp(s * lo)) / (math.exp(s * hi) - math.exp(s * lo)) - 1 / s
        assert abs(float(b[:, d].mean()) - mean) < 0.02


# --- learned surrogate -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def surrogate():
    smear = ResolutionSmearing(0.05)
    t0 = time.perf_counter()
    with one_thread():
        s = SurrogateSmearing.train_from(smear, DOMAIN_1D, events=100_000, epochs=8, hidden=32, generator=gen(0))
    print(f"surrogate: 100k pairs, 8 epochs, {time.perf_counter() - t0:.1f} s")
    return smear, s


def test_surrogate_reproduces_the_smearing_it_learned(surrogate):
    smear, s = surrogate
    assert s.history[-1] < s.history[0]
    for x0 in (0.12, 0.3, 0.6, 0.95):  # slices in x_true: mean and width of r = 1 - x_det / x_true
        x = torch.full((100_000,), x0)
        with torch.no_grad():
            y, _ = s(x, None, gen(1))
        r = 1 - y / x
        assert abs(float(r.mean())) < 0.03 * 0.05, x0
        assert abs(float(r.std()) / 0.05 - 1) < 0.03, x0
    # a test density, smeared both ways
    x = truth_1d(100_000, gen(2))
    a = smear(x, generator=gen(3))
    with torch.no_grad():
        b, _ = s(x, None, gen(4))
    assert ks(a, b) < 0.01
    assert chi2_per_dof(b.double(), a.double(), torch.linspace(0.05, 1.1, 43, dtype=torch.float64)) < CHI2_MAX
    # pseudo-data go through the analytic detector it learned from
    assert torch.equal(s.apply_to_data(x, gen(3)), a)


def test_surrogate_is_differentiable_and_round_trips(surrogate, tmp_path):
    _, s = surrogate
    x = (0.1 + 0.9 * torch.rand(2000, generator=gen(5), dtype=torch.float64)).requires_grad_()
    y, _ = s(x, None, gen(6))
    assert y.dtype == torch.float64
    (g,) = torch.autograd.grad(y.sum(), x)
    h = 1e-4
    with torch.no_grad():  # same draws (same seed) at shifted positions
        fd = (s(x + h, None, gen(6))[0] - s(x - h, None, gen(6))[0]) / (2 * h)
    same_k = (fd - g).abs() < 0.05  # a component flip between x ± h breaks the finite difference (rare)
    assert same_k.float().mean() > 0.99
    torch.testing.assert_close(g[same_k], fd[same_k], rtol=2e-3, atol=2e-3)
    assert abs(float(g.mean()) - 1) < 0.01  # d x_det / d x_true = 1 - r on average
    path = tmp_path / "surrogate.pt"
    s.save(path)
    back = SurrogateSmearing.from_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(back(x.detach(), None, gen(7))[0], s(x.detach(), None, gen(7))[0])
    assert back.reference is None and SurrogateSmearing.load(path).components == s.components


def test_surrogate_on_2d_events_in_the_engine_layout():
    smear = ResolutionSmearing(0.05)
    with one_thread():
        s = SurrogateSmearing.train_from(
            smear, DOMAIN_2D, events=30_000, epochs=5, components=2, hidden=16, generator=gen(0)
        )
    x = 0.2 + 0.6 * torch.rand(2, 3, 4000, 2, generator=gen(1))
    y, w = s(x, torch.ones(2, 3, 4000), gen(2))
    assert y.shape == x.shape and w.shape == (2, 3, 4000)
    r = 1 - y / x
    assert (r.std(dim=(0, 1, 2)) / 0.05 - 1).abs().max() < 0.1


# --- chain and spec ----------------------------------------------------------------------------------------


def test_build_detector_chain_generated_vs_data_in_the_engine_layout():
    cfg = {
        "resolution": 0.05,
        "acceptance": {"turn_on": 0.25, "width": 0.05, "max": 0.9},
        "background": {"fraction": 0.1, "shape": "exponential", "slope": -2.0},
    }
    chain = build_detector(cfg, DOMAIN_1D, coord_axis=True)
    assert [type(e) for e in chain.effects] == [ResolutionSmearing, Acceptance, Background]
    assert chain.differentiable and chain.weighted and "component" not in chain.gradient_note
    x = truth_1d(150_000, gen(0)).view(1, -1, 1).requires_grad_()
    ev, w = chain(x, None, gen(1))
    assert ev.shape == x.shape and w.shape == (1, 150_000) and ev.dtype == torch.float32
    (g,) = torch.autograd.grad((ev[..., 0] * w).sum(), x)
    assert torch.isfinite(g).all() and (g != 0).float().mean() > 0.85
    data = chain.apply_to_data(truth_1d(150_000, gen(2), torch.float64).view(1, -1, 1), gen(3))
    assert data.dtype == torch.float64 and not data.requires_grad
    edges = torch.linspace(0.05, 1.1, 43, dtype=torch.float64)
    assert chi2_per_dof(ev.detach().flatten().double(), data.flatten(), edges, w.detach().flatten()) < CHI2_MAX


def test_empty_and_null_sections_are_the_identity():
    for cfg in (
        None,
        {},
        {"resolution": 0.0, "acceptance": None, "background": None, "surrogate": None},
        {"background": {"fraction": 0.0}},
    ):
        chain = build_detector(cfg, DOMAIN_2D)
        assert len(chain) == 0
        x = torch.rand(10, 2)
        ev, w = chain(x)
        assert ev is x and w is None and chain.apply_to_data(x) is x
    # defaults: turn-on at the lower edge with 5 % of the width, background 10 % uniform
    chain = build_detector({"acceptance": {}, "background": {}}, DOMAIN_1D)
    acc, bg = chain.effects
    assert acc.turn_on.tolist() == [0.1] and math.isclose(acc.width.item(), 0.045) and acc.max == 1.0
    assert bg.fraction == 0.1 and bg.shape == "uniform"


def test_build_detector_with_surrogate():
    with one_thread():
        chain = build_detector({"resolution": 0.05, "surrogate": {"events": 5000, "epochs": 2, "hidden": 8}}, DOMAIN_1D)
    (s,) = chain.effects
    assert isinstance(s, SurrogateSmearing) and "component choice without gradient" in chain.gradient_note
    assert s.reference.resolution == 0.05


@pytest.mark.parametrize(
    "cfg, field, message",
    [
        ({"background": {"fraction": 1.5}}, "detector.background.fraction", "must lie in [0, 1), got 1.5"),
        ({"background": {"fraction": 0.1, "shape": "gauss"}}, "detector.background.shape", "uniform, exponential"),
        ({"background": {"fraction": 0.1, "slope": 1.0}}, "detector.background.slope", "exponential"),
        ({"background": {"frac": 0.1}}, "detector.background.frac", "unknown key"),
        ({"resolution": 0.7}, "detector.resolution", "[0, 0.5]"),
        ({"resolution": "big"}, "detector.resolution", "expected a number"),
        ({"resolution": float("inf")}, "detector.resolution", "expected a finite number"),
        ({"acceptance": {"width": 0.0}}, "detector.acceptance.width", "must be > 0"),
        ({"acceptance": {"width": [0.1, -1]}}, "detector.acceptance.width[1]", "must be > 0"),
        ({"acceptance": {"turn_on": [0.1, 0.2, 0.3]}}, "detector.acceptance.turn_on", "list of 2"),
        ({"acceptance": {"max": 1.2}}, "detector.acceptance.max", "(0, 1]"),
        ({"acceptance": 0.5}, "detector.acceptance", "expected a mapping"),
        ({"surrogate": {}}, "detector.surrogate", "resolution > 0"),
        ({"resolution": 0.1, "surrogate": {"components": 0}}, "detector.surrogate.components", "must lie in [1, 16]"),
        ({"resolution": 0.1, "surrogate": {"events": 10.5}}, "detector.surrogate.events", "whole number"),
        ({"smearing": 0.1}, "detector.smearing", "unknown key"),
    ],
)
def test_invalid_sections_name_the_field(cfg, field, message):
    with pytest.raises(ValueError) as err:
        build_detector(cfg, DOMAIN_2D)
    assert isinstance(err.value, DetectorConfigError) and err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and message in str(err.value)


def test_layout_checks():
    with pytest.raises(ValueError, match="coordinate axis"):
        Acceptance(0.1, 0.1, dims=2, coord_axis=False)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 2\)"):
        Acceptance(0.1, 0.1, dims=2)(torch.rand(10))
    assert isinstance(DetectorChain([ResolutionSmearing(0.1)]), torch.nn.Module)
