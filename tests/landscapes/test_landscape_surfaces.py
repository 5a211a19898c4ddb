"""Surfaces: autograd gradients against finite differences, minima against calculus."""

import math

import pytest
import torch

from descent.landscapes import surfaces
from descent.landscapes.surfaces import SURFACES

ALL = [*SURFACES.values(), surfaces.quadratic(1000.0)]
IDS = [*SURFACES, "quadratic-kappa1000"]


def _autograd(surface, xy):
    xy = xy.clone().requires_grad_()
    (g,) = torch.autograd.grad(surface.f(xy).sum(), xy)
    return g


def _central(surface, xy, h=1e-6):
    out = torch.empty_like(xy)
    for i in range(2):
        e = torch.zeros(2, dtype=xy.dtype)
        e[i] = h
        out[:, i] = (surface.f(xy + e) - surface.f(xy - e)) / (2 * h)
    return out


@pytest.mark.parametrize("surface", ALL, ids=IDS)
def test_gradient_matches_finite_differences(surface):
    gen = torch.Generator().manual_seed(0)
    x0, x1, y0, y1 = surface.window
    u = torch.rand(64, 2, generator=gen, dtype=torch.float64)
    xy = torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)
    g, fd = _autograd(surface, xy), _central(surface, xy)
    scale = fd.abs().max(dim=1, keepdim=True).values.clamp(min=1.0)
    assert torch.allclose(g / scale, fd / scale, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "surface", [s for s in ALL if s.minima], ids=[i for s, i in zip(ALL, IDS) if s.minima]
)
def test_minima_are_stationary_with_positive_curvature(surface):
    for m in surface.minima:
        xy = torch.tensor([m], dtype=torch.float64)
        assert _autograd(surface, xy).abs().max() < 1e-9
        # Central second differences: the Hessian is positive definite (a minimum, not a saddle).
        h = 1e-4
        H = torch.empty(2, 2, dtype=torch.float64)
        for i in range(2):
            e = torch.zeros(2, dtype=torch.float64)
            e[i] = h
            H[i] = (_autograd(surface, xy + e) - _autograd(surface, xy - e))[0] / (2 * h)
        assert torch.linalg.eigvalsh((H + H.T) / 2).min() > 0
        assert float(surface.f(xy)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("key", ["saddle", "monkey"])
def test_saddles_are_stationary_and_not_minima(key):
    s = SURFACES[key]
    origin = torch.zeros(1, 2, dtype=torch.float64)
    assert _autograd(s, origin).abs().max() == 0
    # f takes values below f(0) = 0 arbitrarily close to the saddle.
    for r in (1e-1, 1e-3):
        ring = torch.tensor([[r * math.cos(a), r * math.sin(a)] for a in torch.linspace(0, 6.28, 60)])
        assert s.f(ring).min() < 0 < s.f(ring).max()


def test_himmelblau_saddle_marker_is_a_stationary_point():
    s = SURFACES["himmelblau"]
    (p,) = s.saddles
    assert _autograd(s, torch.tensor([p], dtype=torch.float64)).abs().max() < 1e-3


def test_every_start_and_minimum_is_inside_the_window():
    for s in ALL:
        x0, x1, y0, y1 = s.window
        for px, py in (s.start, *s.minima):
            assert x0 <= px <= x1 and y0 <= py <= y1, s.key


def test_quadratic_has_the_condition_number_asked_for():
    for kappa in (1.0, 20.0, 1000.0):
        f = surfaces.quadratic(kappa).f
        H = torch.autograd.functional.hessian(f, torch.tensor([0.3, -0.2], dtype=torch.float64))
        ev = torch.linalg.eigvalsh(H)
        assert float(ev.max() / ev.min()) == pytest.approx(kappa, rel=1e-12)


def test_noise_is_unbiased_with_the_set_std_and_seeded():
    s = SURFACES["booth"].noisy(0.5, seed=3)
    xy = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
    clean = _autograd(s, xy)
    stream = s.noise_stream()
    draws = []
    for _ in range(4000):
        p = xy.clone().requires_grad_()
        (g,) = torch.autograd.grad(s.loss(p, stream.draw()), p)
        draws.append(g[0] - clean[0])
    d = torch.stack(draws)
    assert d.mean(0).abs().max() < 4 * 0.5 / math.sqrt(4000)
    assert d.std(0).tolist() == pytest.approx([0.5, 0.5], rel=0.05)
    again = s.noise_stream()
    assert torch.equal(again.draw(), s.noise_stream().draw())
    assert not torch.equal(s.noisy(0.5, seed=4).noise_stream().draw(), s.noise_stream().draw())
    assert SURFACES["booth"].noise_stream().draw() is None


def test_gap_is_distance_to_nearest_minimum_zero_within_tol():
    s = SURFACES["himmelblau"]
    near = torch.tensor([[3.0 + 0.5 * s.tol, 2.0]], dtype=torch.float64)
    far = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    assert float(s.gap(near)) == 0
    expected = min(math.hypot(mx, my) for mx, my in s.minima)
    assert float(s.gap(far)) == pytest.approx(expected)


def test_gap_on_saddle_is_height_above_escape_level():
    s = SURFACES["saddle"]
    pts = torch.tensor([[0.0, 0.5], [0.0, 1.2]], dtype=torch.float64)
    assert s.gap(pts).tolist() == pytest.approx([-0.25 - s.escape, 0.0])


def test_unknown_surface_and_bad_parameters_are_named():
    with pytest.raises(ValueError, match="'nope'"):
        surfaces.get("nope")
    with pytest.raises(ValueError, match="0.5"):
        surfaces.quadratic(0.5)
    with pytest.raises(ValueError, match="kappa"):
        surfaces.get("beale", kappa=10)
    with pytest.raises(ValueError, match="-1"):
        SURFACES["beale"].noisy(-1.0)
