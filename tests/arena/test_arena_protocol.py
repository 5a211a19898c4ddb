"""The tuning protocol: budgets, the lr grid, and selection by the stated rule, checked on
a fake task whose final loss for every learning rate is known in closed form."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from descent import catalog
from descent.arena import Task
from descent.arena.measure.protocol import lr_range, plan, trials
from descent.arena.measure.runner import InlineExecutor, execute
from descent.arena.records import Final

STEPS = 20
X = 2.0  # loss (X·w − 1)²: gradient descent multiplies the error by (1 − 2X²η) per step


def quad_model() -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(m.weight)
    return m


def quad_data() -> tuple[TensorDataset, TensorDataset]:
    x, y = torch.full((8, 1), X), torch.ones(8, 1)
    return TensorDataset(x, y), TensorDataset(x.clone(), y.clone())


def neg_mse(out: torch.Tensor, y: torch.Tensor) -> float:
    return -F.mse_loss(out, y).item()


def quad_task() -> Task:
    return Task(
        name="quad",
        model=quad_model,
        data=quad_data,
        loss=F.mse_loss,
        metric=neg_mse,
        metric_name="−mse",
        target=-1e-3,
        steps=STEPS,
        regimes=("full",),
    )


def heavy_ball_loss(lr: float, momentum: float, steps: int = STEPS) -> float:
    """torch's SGD (v ← μv + g; w ← w − ηv) on (X·w − 1)² from w = 0, in float64."""
    w, v, loss = 0.0, 0.0, 1.0
    for t in range(steps):
        g = 2 * X * (X * w - 1)
        v = g if t == 0 else momentum * v + g
        w -= lr * v
        loss = (X * w - 1) ** 2
        if loss > 1e3:  # the arena's rule: above 1000× the initial loss (1) at an evaluation
            return math.inf
    return loss


def run_studies(keys: list[str], budget: int, seeds: int = 2):
    task = quad_task()
    studies = plan(
        [(task, task.name, ("full",), {"full": STEPS})], [catalog.get(k) for k in keys], budget, seeds
    )
    execute(studies, InlineExecutor(), 0)
    return studies


@pytest.mark.parametrize("budget", [1, 2, 4, 5, 7, 10])
def test_every_optimizer_gets_exactly_the_budget(budget):
    for entry in catalog.ENTRIES:
        grid, knob = trials(entry, budget)
        assert len(grid) + len(knob) == budget
        lo, hi = lr_range(entry)
        assert lo <= 1e-4 and hi >= 1.0 and lo <= entry.default_lr / 10 and hi >= entry.default_lr * 10
        if budget == 1:
            assert grid == [entry.default_lr] and knob == []
            continue
        assert len(grid) >= min(budget, 4)
        assert grid[0] == pytest.approx(lo) and grid[-1] == pytest.approx(hi)
        steps = np.diff(np.log10(grid))
        assert np.allclose(steps, steps[0], atol=0.01), grid  # log-spaced (3 significant digits)
        assert len(knob) <= budget // 3


def test_zero_budget_is_an_error():
    with pytest.raises(ValueError, match="budget"):
        trials(catalog.get("adam"), 0)
    with pytest.raises(ValueError, match="seeds"):
        plan([("x", "x", ("full",), {"full": 1})], [catalog.get("sgd")], 3, 0)


def test_sgd_tuning_picks_the_closed_form_best_lr():
    (study,) = run_studies(["sgd"], budget=7)
    expected = {lr: (1 - 2 * X * X * lr) ** (2 * STEPS) for lr in study.lr_grid}
    expected = {lr: (v if v < 1e3 else math.inf) for lr, v in expected.items()}
    best = min(study.lr_grid, key=lambda lr: expected[lr])
    assert study.best.lr == best
    assert best == pytest.approx(0.0464, rel=0.01)  # |1 − 8η| is smallest at this grid point
    for r in study.phase("lr"):
        want = expected[r.lr]
        if math.isinf(want):
            assert r.diverged and r.score == math.inf
        else:
            assert r.score == pytest.approx(want, rel=0.05, abs=1e-8)


def test_momentum_tuning_picks_the_best_lr_then_the_best_knob():
    (study,) = run_studies(["momentum"], budget=7)
    assert study.knob_values == [0.5, 0.99]
    lr_losses = {lr: heavy_ball_loss(lr, 0.9) for lr in study.lr_grid}
    best_lr = min(study.lr_grid, key=lambda lr: lr_losses[lr])
    assert {r.lr for r in study.phase("knob")} == {best_lr}
    tried = [(best_lr_i, 0.9, lr_losses[best_lr_i]) for best_lr_i in study.lr_grid]
    tried += [(best_lr, mu, heavy_ball_loss(best_lr, mu)) for mu in study.knob_values]
    want_lr, want_mu, _ = min(tried, key=lambda t: t[2])
    assert (study.best.lr, study.best.hyper["momentum"]) == (want_lr, want_mu)


def test_seeds_and_phases():
    (study,) = run_studies(["adam"], budget=5, seeds=3)
    runs = study.ordered()
    assert [r.phase for r in runs] == ["defaults"] * 3 + ["lr"] * 4 + ["knob"] + ["tuned"] * 3
    assert [r.seed for r in study.phase("defaults")] == [1, 2, 3]
    assert {r.seed for r in study.phase("lr") + study.phase("knob")} == {0}
    assert [r.seed for r in study.phase("tuned")] == [1, 2, 3]  # fresh seeds, not the tuning seed
    for r in study.phase("tuned"):
        assert r.lr == study.best.lr and r.hyper == study.best.hyper
    assert study.phase("defaults")[0].lr == catalog.get("adam").default_lr
    assert len(runs) == study.total


def test_ties_go_to_the_earlier_trial():
    (study,) = run_studies(["sgd"], budget=4)
    for key, r in study.results.items():  # make every trial equally good
        if r.phase in ("lr", "knob"):
            final = Final(None, None, 0.5, None)
            study.results[key] = dataclasses.replace(r, final=final, diverged=False)
    assert study._pick(("lr",)).lr == study.lr_grid[0]
