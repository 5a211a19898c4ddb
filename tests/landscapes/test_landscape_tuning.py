"""Tuning: batch rows behave exactly like lone runs, and the rule picks what it says."""

import math

import numpy as np
import pytest
import torch

from descent import catalog
from descent.landscapes import surfaces, trajectories, tuning
from descent.landscapes.surfaces import SURFACES


def _lone_final(surface, entry, lr, hyper, steps):
    """The user's loop, written out here: one point, one optimizer, backward, step (and,
    for Schedule-Free, train() first and eval() for the point to report)."""
    p = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    opt = entry.make([p], lr=lr, **hyper)
    if hasattr(opt, "train"):
        opt.train()
    stream = surface.noise_stream()
    for _ in range(steps):
        opt.zero_grad()
        surface.loss(p, stream.draw()).backward()
        opt.step()
    if hasattr(opt, "eval"):
        opt.eval()
    return p.detach()


@pytest.mark.parametrize("key", [e.key for e in catalog.ENTRIES])
def test_batch_rows_match_lone_runs(key):
    """Each candidate in the batch (rows sharing a param group, knob values as groups)
    ends exactly where the same setting run alone ends."""
    entry = catalog.get(key)
    surface = SURFACES["booth"].noisy(0.3, seed=1)
    lrs = (1e-3, 1e-2, 5e-2)
    cands = tuning.candidates(entry, lrs)
    result = trajectories.run_batch(surface, entry, cands, 25)
    for i, (lr, hyper) in enumerate(cands):
        lone = _lone_final(surface, entry, lr, hyper, 25)
        assert torch.allclose(result.final[i], lone, rtol=1e-9, atol=1e-12), (lr, hyper)


def test_lr_linearity_probe():
    # Every catalog optimizer is, except AdamW, whose default weight decay is 1e-2, and
    # Adafactor, whose step size is min(lr, 1/√t) times the params' RMS.
    for entry in catalog.ENTRIES:
        assert trajectories.lr_linear(entry, {}) == (entry.key not in ("adamw", "adafactor")), entry.key
    assert trajectories.lr_linear(catalog.get("adamw"), {"weight_decay": 0.0})
    assert not trajectories.lr_linear(catalog.get("sgd"), {"weight_decay": 1e-4})
    assert not trajectories.lr_linear(catalog.get("adam"), {"weight_decay": 1e-4})


def test_weight_decay_candidates_get_a_group_each_and_still_match():
    entry = catalog.get("adamw")
    surface = SURFACES["beale"]
    cands = [(lr, {"weight_decay": 0.1}) for lr in (1e-3, 3e-2)] + [(1e-2, {"weight_decay": 0.0})]
    groups = trajectories._plan(surface, entry, cands)
    assert [g.scale is None for g in groups] == [True, True, False]
    result = trajectories.run_batch(surface, entry, cands, 20)
    for i, (lr, hyper) in enumerate(cands):
        assert torch.allclose(
            result.final[i], _lone_final(surface, entry, lr, hyper, 20), rtol=1e-9, atol=1e-12
        )


def test_trajectory_matches_the_lone_loop_and_the_batch_history():
    entry, surface = catalog.get("adam"), SURFACES["beale"]
    path = trajectories.trajectory(surface, entry, 0.05, {"betas": (0.9, 0.99)}, 30)
    assert path.xy.shape == (31, 2) and not path.diverged
    assert np.allclose(path.xy[-1], _lone_final(surface, entry, 0.05, {"betas": (0.9, 0.99)}, 30).numpy())
    batch = trajectories.run_batch(surface, entry, [(0.05, {"betas": (0.9, 0.99)})], 30, keep_history=True)
    assert np.allclose(batch.path(0, surface).xy, path.xy, rtol=1e-9, atol=1e-12)


def _sgd_quadratic_scores(kappa, lrs, steps, surface):
    """Closed form of SGD on x²/κ + y²: x_t = (1 − 2lr/κ)^t x_0, y_t = (1 − 2lr)^t y_0;
    score = worst distance to 0 (0 within tol) over the last 10 % of steps, None if the
    run leaves the box."""
    x0, y0 = surface.start
    bx0, bx1, by0, by1 = surface.box
    tail = max(1, math.ceil(steps / 10))
    out = []
    for lr in lrs:
        t = np.arange(steps + 1)
        with np.errstate(over="ignore", invalid="ignore"):
            x = (1 - 2 * lr / kappa) ** t * x0
            y = (1 - 2 * lr) ** t * y0
        if not ((x >= bx0) & (x <= bx1) & (y >= by0) & (y <= by1)).all():
            out.append(None)
            continue
        d = np.hypot(x, y)[-tail:]
        d = np.where(d <= surface.tol, 0.0, d)
        out.append(float(d.max()))
    return out


@pytest.mark.parametrize("kappa, steps", [(20.0, 60), (50.0, 150)])
def test_tuning_picks_what_the_rule_says_on_a_closed_form_case(kappa, steps):
    surface = surfaces.quadratic(kappa)
    scores = _sgd_quadratic_scores(kappa, tuning.LR_GRID, steps, surface)
    alive = [(s, lr) for s, lr in zip(scores, tuning.LR_GRID) if s is not None]
    best_score, best_lr = min(alive)
    got = tuning.tune(surface, catalog.get("sgd"), steps)
    assert got.lr == best_lr
    assert got.score == pytest.approx(best_score, abs=1e-9)
    assert got.diverged == len(scores) - len(alive)


def test_ties_go_to_the_smaller_learning_rate():
    # Booth is reached (gap 0) by many learning rates; the smallest of them must win.
    surface, entry = SURFACES["booth"], catalog.get("sgd")
    result = trajectories.run_batch(surface, entry, tuning.candidates(entry), 150)
    reached = [lr for lr, s, d in zip(tuning.LR_GRID, result.score, result.diverged) if s == 0 and not d]
    assert len(reached) > 1
    assert tuning.tune(surface, entry, 150).lr == min(reached)


@pytest.mark.parametrize("surface_key", list(SURFACES))
def test_tuned_setting_does_not_diverge_for_any_optimizer(surface_key):
    """Every catalog optimizer gets a setting whose lone run stays finite and in the box
    (saddles: until it has escaped)."""
    surface = SURFACES[surface_key]
    steps = 30
    for entry in catalog.ENTRIES:
        t = tuning.tune(surface, entry, steps)
        assert t.lr in tuning.LR_GRID and math.isfinite(t.score)
        path = trajectories.trajectory(surface, entry, t.lr, t.hyper, steps)
        assert not path.diverged, (entry.key, t)
        if entry.knob is not None:
            assert set(t.hyper) == {entry.knob[0]} and t.hyper[entry.knob[0]] in entry.knob[1]


def test_noisy_tuning_is_reproducible_and_finite():
    surface = SURFACES["beale"].noisy(1.0, seed=7)
    a = tuning.tune(surface, catalog.get("adam"), 60)
    b = tuning.tune(surface, catalog.get("adam"), 60)
    assert (a.lr, a.hyper, a.score) == (b.lr, b.hyper, b.score)
    assert np.isfinite(a.path.xy).all()


def test_defaults_mode_uses_the_catalog_settings():
    t = tuning.defaults(SURFACES["beale"], catalog.get("momentum"), 10)
    assert (t.lr, t.hyper, t.tuned) == (catalog.get("momentum").default_lr, {"momentum": 0.9}, False)
    assert t.as_dict() == {"lr": t.lr, "momentum": 0.9}
    assert tuning.defaults(SURFACES["beale"], catalog.get("adam"), 10).hyper == {"betas": (0.9, 0.999)}
