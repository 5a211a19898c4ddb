"""The registry that drives the generic tests: every optimizer × a spread of settings.

Each case is ``(class name, kwargs)``; ``TORCH`` marks the ones torch.optim has, so
parity tests run against it.
"""

from __future__ import annotations

import math

import torch

import descent

CASES: list[tuple[str, dict]] = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "maximize": True}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1, "initial_accumulator_value": 0.2}),
    ("Adagrad", {"lr": 0.1, "eps": 1e-3, "maximize": True}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "centered": True, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "eps": 1e-3, "maximize": True}),
    ("Adadelta", {}),
    ("Adadelta", {"lr": 0.5, "rho": 0.95, "eps": 1e-4, "weight_decay": 0.1}),
    ("Adadelta", {"maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "betas": (0.5, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    ("Adam", {"decoupled_weight_decay": True, "weight_decay": 0.2}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.5, "amsgrad": True}),
    ("NAdam", {}),
    ("NAdam", {"momentum_decay": 0.01, "weight_decay": 0.1}),
    ("NAdam", {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True}),
    ("NAdam", {"momentum_decay": math.inf}),
    ("Adamax", {}),
    ("Adamax", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "maximize": True}),
    ("RAdam", {}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1}),
    ("RAdam", {"decoupled_weight_decay": True, "weight_decay": 0.1, "betas": (0.9, 0.99)}),
]

#: One representative setting per class (the engine and checkpoint tests use these).
DEFAULTS: list[tuple[str, dict]] = [
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.1}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("Adadelta", {}),
    ("Adam", {"amsgrad": True}),
    ("AdamW", {}),
    ("NAdam", {}),
    ("Adamax", {}),
    ("RAdam", {}),
    ("Lion", {"weight_decay": 0.1}),
    ("EMAMomentum", {"lr": 0.05}),
]

SHAPES = [(7, 5), (5,), (), (3, 2, 4), (0,), (11,), (2, 1)]


def case_id(case: tuple[str, dict]) -> str:
    name, kw = case
    return name + ("" if not kw else "-" + ",".join(f"{k}={v}" for k, v in kw.items()))


def groups(params: list, split: int = 3) -> list[dict]:
    """Two param groups, the second with its own lr, as a user would write them."""
    return [{"params": params[:split]}, {"params": params[split:], "lr": 0.03}]


def make_pair(name: str, kw: dict, dtype=torch.float64, seed: int = 0, **engine):
    """The same random params twice: one set for descent, one for torch.optim."""
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, dtype=dtype, generator=gen) for s in SHAPES]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(descent, name)(groups(ours), **kw, **engine)
    ref = getattr(torch.optim, name)(groups(theirs), **kw)
    return ours, theirs, opt, ref


def feed(ours: list, theirs: list, step: int, gen: torch.Generator) -> None:
    """Fresh random gradients; every so often a param gets none (it must not move)."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if (step + 2 * i) % 9 == 4:
            a.grad = b.grad = None
            continue
        g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
        a.grad = g.clone()
        b.grad = g.clone()


def compare_state(opt, ref, tol: float, cast: tuple[str, ...] = (), err=None) -> None:
    """``opt.state_dict()`` against torch.optim's ``ref.state_dict()``: the same params
    with state, the same keys, shapes and dtypes, values within ``tol``, and param
    groups equal key for key (no key either side lacks). Keys in ``cast`` (NAdam's
    ``mu_product``, which torch.optim's load casts to float64) are products in [0, 1]
    that the step uses as 1 − Π: compared to float32's precision, absolutely. ``err``
    measures a difference (default :func:`rel_err`)."""
    err = err or rel_err
    ours, theirs = opt.state_dict(), ref.state_dict()
    assert set(ours["state"]) == set(theirs["state"])
    for pid, st in theirs["state"].items():
        assert set(ours["state"][pid]) == set(st), pid
        for key, value in st.items():
            mine = ours["state"][pid][key]
            assert isinstance(mine, torch.Tensor) and mine.shape == value.shape, (pid, key)
            assert mine.dtype == value.dtype or key in cast, (pid, key, mine.dtype, value.dtype)
            if key in cast:
                assert (mine.double() - value.double()).abs().max() <= 1e-6, (pid, key)
                continue
            assert err(mine, value) <= tol, (pid, key, err(mine, value))
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for g_ours, g_theirs in zip(ours["param_groups"], theirs["param_groups"]):
        assert set(g_ours) == set(g_theirs), set(g_ours) ^ set(g_theirs)
        for key, value in g_theirs.items():
            mine = g_ours[key]
            if isinstance(value, torch.Tensor):
                assert isinstance(mine, torch.Tensor) and torch.equal(mine, value), key
            else:
                assert mine == value, (key, mine, value)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
