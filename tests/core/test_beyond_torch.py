"""Schedule-Free AdamW and SGD, and ADOPT, against their papers' algorithms written plainly
in NumPy (an independent reference: no torch, no descent code), over 150 steps of random
gradients; the Schedule-Free train/eval switch; and, where the reference implementation
``schedulefree`` is installed, its numbers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import descent

STEPS = 150


def _grads(seed=0, shape=(4, 3)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(STEPS)]


def schedule_free(lr, beta, wd, warmup, r, power, adam=None):
    """Defazio et al. 2024, Algorithm 1 (AdamW; SGD when ``adam`` is None), with x, y and z
    kept explicitly, the learning rate γ_t = lr·min(1, t/warmup), the average's weights
    c_{t+1} = w_t/Σw, w_t = t^r·(max γ)^p, and the bias correction where the reference
    implementation puts it (inside the root: g/(√(v/(1 − β₂ᵗ)) + ε)). Returns y after each
    step and x at the end."""

    def update(y, g, s, t):
        if t == 1:
            s.update(z=y.copy(), x=y.copy(), v=np.zeros_like(y), lr_max=-1.0, wsum=0.0)
        gamma = lr * min(1.0, t / warmup) if warmup else lr
        s["lr_max"] = max(s["lr_max"], gamma)
        w = t**r * s["lr_max"] ** power
        s["wsum"] += w
        c = w / s["wsum"]
        if adam is None:
            d = g + wd * y  # SGD: weight decay added to the gradient at y
        else:
            b2, eps = adam
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            d = g / (np.sqrt(s["v"] / (1 - b2**t)) + eps) + wd * y
        s["z"] = s["z"] - gamma * d
        s["x"] = (1 - c) * s["x"] + c * s["z"]
        return (1 - beta) * s["z"] + beta * s["x"]

    return update


def adopt(lr, b1, b2, eps, wd=0.0, decouple=False, clip=True):
    """Taniguchi et al. 2024, Algorithm 2 (Algorithm 1 without ``clip``), steps counted
    from 0 as the paper counts them: step 0 only sets v₀ = g₀²; c_k = k^{1/4}."""

    def update(w, g, s, t):
        k = t - 1
        if wd and not decouple:
            g = g + wd * w
        if k == 0:
            s.update(v=g * g, m=np.zeros_like(w))
            return w
        if wd and decouple:
            w = w - lr * wd * w
        n = g / np.maximum(np.sqrt(s["v"]), eps)
        if clip:
            n = np.clip(n, -(k**0.25), k**0.25)
        s["m"] = b1 * s["m"] + (1 - b1) * n
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        return w - lr * s["m"]

    return update


CASES = [
    ("SF-AdamW", descent.AdamWScheduleFree, {}, schedule_free(0.0025, 0.9, 0.0, 0, 0.0, 2.0, (0.999, 1e-8))),
    (
        "SF-AdamW, decay, warmup, r",
        descent.AdamWScheduleFree,
        {
            "lr": 0.01,
            "betas": (0.8, 0.99),
            "weight_decay": 0.1,
            "warmup_steps": 20,
            "r": 0.5,
            "weight_lr_power": 1.0,
        },
        schedule_free(0.01, 0.8, 0.1, 20, 0.5, 1.0, (0.99, 1e-8)),
    ),
    ("SF-SGD", descent.SGDScheduleFree, {"lr": 0.05}, schedule_free(0.05, 0.9, 0.0, 0, 0.0, 2.0)),
    (
        "SF-SGD, decay, warmup",
        descent.SGDScheduleFree,
        {"lr": 0.05, "momentum": 0.7, "weight_decay": 0.2, "warmup_steps": 10},
        schedule_free(0.05, 0.7, 0.2, 10, 0.0, 2.0),
    ),
    ("ADOPT", descent.ADOPT, {"lr": 0.01}, adopt(0.01, 0.9, 0.9999, 1e-6)),
    (
        "ADOPT, L2, unclipped",
        descent.ADOPT,
        {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "clip_lambda": None},
        adopt(0.01, 0.8, 0.99, 1e-6, wd=0.1, clip=False),
    ),
    (
        "ADOPT, decoupled",
        descent.ADOPT,
        {"lr": 0.01, "weight_decay": 0.1, "decouple": True, "maximize": False},
        adopt(0.01, 0.9, 0.9999, 1e-6, wd=0.1, decouple=True),
    ),
]


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_the_papers_algorithm(case, flat):
    _, cls, kw, update = case
    grads = _grads()
    w0 = np.random.default_rng(1).standard_normal((4, 3))
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = cls([p], flat=flat, **kw)
    if hasattr(opt, "train"):
        opt.train()
    w, state, ours, theirs = w0.copy(), {}, [], []
    for t, g in enumerate(grads, start=1):
        p.grad = torch.tensor(g)
        opt.step()
        w = update(w, g, state, t)
        ours.append(p.detach().numpy().copy())
        theirs.append(w.copy())
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12, atol=1e-12)
    assert np.abs(theirs[-1] - w0).max() > 0.05  # the trajectory went somewhere
    if "x" in state:  # eval() moves the params to the average x
        opt.eval()
        np.testing.assert_allclose(p.detach().numpy(), state["x"], rtol=1e-12, atol=1e-12)


def test_adopt_first_step_only_initializes_v():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = descent.ADOPT([p], lr=0.1, weight_decay=0.5, decouple=True)
    p.grad = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))  # no decay either
    assert torch.equal(opt.state[p]["exp_avg_sq"], p.grad**2)
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros(3, dtype=torch.float64))
    assert opt.state[p]["step"].item() == 1.0


@pytest.mark.parametrize("cls", [descent.AdamWScheduleFree, descent.SGDScheduleFree])
def test_schedule_free_train_eval_switch(cls):
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = cls([p], lr=0.1)
    p.grad = torch.randn(5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer.train\(\)"):
        opt.step()  # a new optimizer is in eval mode, as the reference's is
    assert len(opt.state) == 0
    opt.train()
    for _ in range(5):
        p.grad = torch.randn(5, dtype=torch.float64)
        opt.step()
    y = p.detach().clone()
    beta = (
        opt.param_groups[0]["betas"][0] if "betas" in opt.param_groups[0] else opt.param_groups[0]["momentum"]
    )
    z = opt.state[p]["z"]
    opt.eval()
    x = p.detach().clone()
    assert torch.allclose(y, (1 - beta) * z + beta * x, rtol=0, atol=1e-14)  # y = (1 − β)z + βx
    opt.eval()  # twice is once
    assert torch.equal(p.detach(), x)
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    opt.train()
    assert torch.allclose(p.detach(), y, rtol=0, atol=1e-14)
    assert opt.param_groups[0]["train_mode"] is True


def test_schedule_free_bad_input():
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="Momentum must be between 0 and 1 exclusive: 1.0"):
        descent.SGDScheduleFree(p, momentum=1.0)
    with pytest.raises(ValueError, match="warmup_steps value: -1"):
        descent.AdamWScheduleFree(p, warmup_steps=-1)
    with pytest.raises(ValueError, match="beta parameter at index 1: 1.0"):
        descent.AdamWScheduleFree(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="clip_lambda"):
        descent.ADOPT(p, clip_lambda=0.5)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize(
    "name,kw",
    [
        ("AdamWScheduleFree", {}),
        ("AdamWScheduleFree", {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 7, "r": 0.5}),
        ("SGDScheduleFree", {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "warmup_steps": 5}),
    ],
)
def test_matches_the_reference_implementation(name, kw, flat):
    """The reference implementation's numbers (facebookresearch/schedule_free), when
    installed: params in train and eval mode and the z state, to 1e-13 in float64."""
    schedulefree = pytest.importorskip("schedulefree")
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, dtype=torch.float64, generator=gen) for s in [(7, 5), (5,), (300, 41)]]
    ours, theirs = (
        [torch.nn.Parameter(x.clone()) for x in init],
        [torch.nn.Parameter(x.clone()) for x in init],
    )
    opt, ref = getattr(descent, name)(ours, flat=flat, **kw), getattr(schedulefree, name)(theirs, **kw)
    opt.train(), ref.train()
    for step in range(60):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, dtype=torch.float64, generator=gen)
            b.grad = a.grad.clone()
        opt.step(), ref.step()
        if step % 20 == 19:
            opt.eval(), ref.eval()
            for a, b in zip(ours, theirs):
                assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)
            opt.train(), ref.train()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)
        assert torch.allclose(opt.state[a]["z"], ref.state[b]["z"], rtol=1e-13, atol=1e-15)


def test_every_conventions_row_names_a_case_here():
    """Each row of docs/conventions.md's table of these optimizers names cases above."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "conventions.md").read_text()
    table = doc.split("| Formula (paper) |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    known = {c[0] for c in CASES}
    assert len(rows) == 3
    for row in rows:
        ids = re.findall(r"`([^`]+)`", row.rstrip(" |").rsplit("|", 1)[1])
        assert ids and all(i in known for i in ids), row


@pytest.mark.parametrize("name", ["AdamWScheduleFree", "SGDScheduleFree"])
def test_a_reference_checkpoint_loads_and_continues(name):
    """A checkpoint of the reference implementation (its step count and averaging sums
    kept per group) loads, and both continue on the same trajectory."""
    schedulefree = pytest.importorskip("schedulefree")
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, dtype=torch.float64, generator=gen)
    a, b = torch.nn.Parameter(x.clone()), torch.nn.Parameter(x.clone())
    ref = getattr(schedulefree, name)([a], lr=0.05, warmup_steps=3)
    ref.train()
    for _ in range(5):
        a.grad = torch.randn(6, dtype=torch.float64, generator=gen)
        ref.step()
    b.data.copy_(a.detach())
    opt = getattr(descent, name)([b], lr=0.05, warmup_steps=3)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # as saved: not the live tensors
    assert opt.param_groups[0]["train_mode"] is True and "k" not in opt.param_groups[0]
    for _ in range(5):
        g = torch.randn(6, dtype=torch.float64, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        opt.step()
    assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)
    assert opt.state[b]["step"].item() == 10.0
