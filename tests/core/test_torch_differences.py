"""Corners where a drop-in could differ from torch.optim, each pinned to torch's numbers
(see "Differences from torch.optim" in docs/conventions.md)."""

from __future__ import annotations

import warnings

import pytest
import torch
from optim_cases import compare_state, rel_err

import descent


def _pair(shape=(5,), dtype=torch.float64, seed=0):
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return torch.nn.Parameter(x.clone()), torch.nn.Parameter(x.clone())


def _steps(pairs, opt, ref, n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for a, b in pairs:
            g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()


def test_adagrad_fills_every_sum_from_the_constructors_value():
    # The example: torch gives p = −0.1 and sum = 1 (it ignores the group's 1.0).
    with pytest.warns(RuntimeWarning, match="initial_accumulator_value=1.0"):
        ours = descent.Adagrad(
            [{"params": [a := torch.nn.Parameter(torch.zeros(1))], "initial_accumulator_value": 1.0}], lr=0.1
        )
    ref = torch.optim.Adagrad(
        [{"params": [b := torch.nn.Parameter(torch.zeros(1))], "initial_accumulator_value": 1.0}], lr=0.1
    )
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    ours.step()
    ref.step()
    assert a.item() == b.item() == pytest.approx(-0.1)
    assert ours.state[a]["sum"].item() == ref.state[b]["sum"].item() == 1.0
    # A group added later starts from the constructor's value too (2.0 here).
    (c, d), (e, f) = _pair(seed=2), _pair(seed=3)
    ours = descent.Adagrad([c], lr=0.1, initial_accumulator_value=2.0)
    ref = torch.optim.Adagrad([d], lr=0.1, initial_accumulator_value=2.0)
    _steps([(c, d)], ours, ref, 3)
    with pytest.warns(RuntimeWarning):
        ours.add_param_group({"params": [e], "initial_accumulator_value": 0.5})
    ref.add_param_group({"params": [f], "initial_accumulator_value": 0.5})
    _steps([(c, d), (e, f)], ours, ref, 5)
    assert rel_err(e, f) <= 1e-12 and rel_err(c, d) <= 1e-12
    compare_state(ours, ref, 1e-12)


def test_sgd_runs_a_nesterov_group_with_inherited_dampening():
    (a, b), (c, d) = _pair(seed=4), _pair(seed=5)
    groups = lambda x, y: [{"params": [x]}, {"params": [y], "nesterov": True, "momentum": 0.9}]  # noqa: E731
    with pytest.warns(RuntimeWarning, match="nesterov=True with momentum=0.9 and dampening=0.3"):
        ours = descent.SGD(groups(a, c), lr=0.05, momentum=0.5, dampening=0.3)
    ref = torch.optim.SGD(groups(b, d), lr=0.05, momentum=0.5, dampening=0.3)
    _steps([(a, b), (c, d)], ours, ref, 20)
    assert rel_err(a, b) <= 1e-12 and rel_err(c, d) <= 1e-12
    compare_state(ours, ref, 1e-12)
    # The constructor's own arguments are checked, as torch.optim checks them.
    with pytest.raises(ValueError, match="dampening=0.3"):
        descent.SGD([a], momentum=0.9, nesterov=True, dampening=0.3)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("Adam", {}),
        ("Adam", {"amsgrad": True, "weight_decay": 0.1, "decoupled_weight_decay": True}),
        ("AdamW", {}),
        ("Adagrad", {"lr_decay": 0.01}),
        ("NAdam", {}),
        ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        ("Adamax", {}),
        ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        ("SGD", {"momentum": 0.9}),
        ("RMSprop", {"momentum": 0.5}),
        ("Adadelta", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(v),
)
@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.bfloat16])
def test_a_tensor_lr_rounds_as_torch_rounds_it(name, kw, lr_dtype):
    """torch.optim computes lr/(1 − β₁ᵗ), 1 − lr·λ … in the tensor's own dtype; rounded
    in float64 instead, Adam drifts 1e-9 and AdamW 5e-6 (relative) in 200 steps."""
    a, b = _pair((20,))
    lr = 1.0 if name == "Adadelta" else 0.0123
    ours = getattr(descent, name)([a], lr=torch.tensor(lr, dtype=lr_dtype), **kw)
    ref = getattr(torch.optim, name)([b], lr=torch.tensor(lr, dtype=lr_dtype), **kw)
    _steps([(a, b)], ours, ref, 200)
    assert rel_err(a, b) <= 1e-14
    compare_state(ours, ref, 1e-14, cast=("mu_product",))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adagrad", "RMSprop"])
def test_param_groups_hold_torchs_keys_only(name):
    a, b = _pair()
    ours, ref = getattr(descent, name)([a]), getattr(torch.optim, name)([b])
    assert ours.state_dict()["param_groups"] == ref.state_dict()["param_groups"]
    # eps_inside is a key only where it is set, and a torch.optim checkpoint of it loads.
    inside = getattr(descent, name)([a], eps_inside=True)
    assert inside.param_groups[0]["eps_inside"] is True
    ref.load_state_dict(inside.state_dict())
    assert "eps_inside" in ref.param_groups[0]  # torch.optim keeps a key it does not use


@pytest.mark.parametrize(
    "name,kw",
    [
        ("Adam", {"lr": 0.01}),
        ("AdamW", {"lr": 0.01}),
        ("SGD", {"lr": 0.01, "momentum": 0.9}),
        ("Adagrad", {"lr": 0.1}),
    ],
)
def test_non_contiguous_params_follow_torchs_for_loop(name, kw):
    """torch 2.13's fused=True CPU kernels go wrong on non-contiguous params (1e-2 … 1
    within 20 steps); descent follows torch's reference for-loop there."""
    gen = torch.Generator().manual_seed(7)
    bases = [
        torch.randn(5, 6, dtype=torch.float64, generator=gen),
        torch.randn(4, 8, dtype=torch.float64, generator=gen),
    ]

    def params():
        return [torch.nn.Parameter(bases[0].clone().t()), torch.nn.Parameter(bases[1].clone()[:, ::2])]

    ours, theirs = params(), params()
    assert not any(p.is_contiguous() for p in ours)
    opt = getattr(descent, name)(ours, **kw)
    ref = getattr(torch.optim, name)(theirs, foreach=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on this path
        _steps(list(zip(ours, theirs)), opt, ref, 20)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
        assert a.stride() == b.stride()


def test_a_host_scalar_assigned_by_a_rule_rounds_as_torchs_in_place_op_on_a_0d_tensor():
    """``Host``: ``h[k] = h[k] * h.num(k, x)`` then rounded is ``state[k].mul_(x)`` of a
    float32 0-d tensor, bit for bit; a float64 one computes in float64 as it is."""
    from descent.rules.base import Host

    gen = torch.Generator().manual_seed(0)
    values = torch.rand(3000, generator=gen, dtype=torch.float64)
    factors = (0.5 + 0.5 * torch.rand(3000, generator=gen, dtype=torch.float64)).tolist()
    naive_differs = 0
    for value, x in zip(values.float().tolist(), factors):
        ref = torch.tensor(value, dtype=torch.float32).mul_(x).item()
        h = Host({"m": value, "w": value}, {"m"})
        h["m"] = h["m"] * h.num("m", x)
        h["w"] = h["w"] * h.num("w", x)
        assert h.rounded()["m"] == ref, (value, x)
        assert h.rounded()["w"] == torch.tensor(value, dtype=torch.float64).mul_(x).item()
        naive_differs += Host({"m": value * x}, {"m"}).rounded()["m"] != ref
    assert naive_differs > 0  # (the operand's rounding matters: the test can fail)
