"""``differentiable=True``: the step through autograd, against torch.optim's own
differentiable step (values and gradients with respect to the param, its gradient, its
state and a tensor learning rate) and ``torch.autograd.gradcheck``."""

from __future__ import annotations

import pytest
import torch

import descent

CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("Adadelta", {"rho": 0.8, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "maximize": True}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("NAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("Adamax", {"lr": 0.01, "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
]
ID = [f"{n}-{'-'.join(kw)}" for n, kw in CASES]


@pytest.fixture(autouse=True)
def _float64():
    # torch.optim's differentiable step computes its bias corrections from the step
    # tensor; in float64 (the default dtype here) they carry no float32 rounding.
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _warm_state(name: str, kw: dict, steps: int, shape=(4,)) -> dict:
    """A realistic state (torch.optim's, after a few plain steps), as leaves that require grad."""
    gen = torch.Generator().manual_seed(3)
    q = torch.nn.Parameter(torch.randn(shape, generator=gen))
    ref = getattr(torch.optim, name)([q], **kw)
    for _ in range(steps):
        q.grad = torch.randn(shape, generator=gen)
        ref.step()
    out = {}
    for k, v in ref.state[q].items():
        leaf = torch.is_tensor(v) and v.is_floating_point() and k != "step"
        out[k] = v.detach().clone().requires_grad_(leaf) if torch.is_tensor(v) else v
    return out


def _diff_step(cls, kw, p, grad, state, *tensors):
    """torch's own harness (test/optim/test_optim.py's _diff_fn): one step of a fresh
    optimizer over a copy of ``p`` with ``grad`` and ``state``; the outputs that require grad."""
    p = p.clone()
    p.grad = grad
    opt = cls([p], differentiable=True, **kw)
    opt.state[p].update({k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()})
    opt.step()
    return p, opt.state[p]


@pytest.mark.parametrize("steps", [0, 3], ids=["fresh", "warm"])
@pytest.mark.parametrize("case", CASES, ids=ID)
def test_values_and_gradients_match_torch(case, steps):
    name, kw = case
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(4, generator=gen, requires_grad=True)
    grad = torch.randn(4, generator=gen, requires_grad=True)
    state = _warm_state(name, kw, steps) if steps else {}
    leaves = [p, grad, *(v for v in state.values() if torch.is_tensor(v) and v.requires_grad)]
    outs = {}
    for lib in (torch.optim, descent):
        new_p, st = _diff_step(getattr(lib, name), kw, p, grad, state)
        out = [new_p, *(st[k] for k in sorted(st) if k != "step")]
        weights = [torch.linspace(-1, 2, o.numel()).reshape(o.shape) for o in out]
        loss = sum((o * w).sum() for o, w in zip(out, weights) if o.requires_grad)
        outs[lib] = (out, sorted(st), torch.autograd.grad(loss, leaves, allow_unused=True))
    (mine, keys, dmine), (theirs, their_keys, dtheirs) = outs[descent], outs[torch.optim]
    assert keys == their_keys
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    if name == "SGD" and not steps:
        # torch.optim.SGD starts its momentum buffer from grad.detach(), so its first step
        # carries no gradient through the buffer; descent's does (test_gradcheck checks it).
        assert all(d is not None for d in dmine)
        return
    for a, b in zip(dmine, dtheirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "name,kw",
    [("SGD", {"weight_decay": 0.1}), ("Adam", {"weight_decay": 0.1}), ("AdamW", {})],
)
def test_hypergradient_of_a_tensor_lr_matches_torch(name, kw):
    """d(new params)/d(lr) for a tensor lr that requires grad (a hypergradient)."""
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(5, generator=gen, requires_grad=True)
    grads = [torch.randn(5, generator=gen) for _ in range(3)]
    found = {}
    for lib in (torch.optim, descent):
        lr = torch.tensor(0.05, requires_grad=True)
        p = p0.clone()
        opt = getattr(lib, name)([p], lr=lr, differentiable=True, **kw)
        for g in grads:
            p.grad = g
            opt.step()
        found[lib] = (p.detach().clone(), *torch.autograd.grad(p.sum(), (lr, p0)))
    for a, b in zip(found[descent], found[torch.optim]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


BEYOND = [("AdamWScheduleFree", {"weight_decay": 0.1}), ("SGDScheduleFree", {"lr": 0.1}), ("ADOPT", {})]


@pytest.mark.parametrize("case", CASES + BEYOND, ids=str)
def test_gradcheck(case):
    """Finite differences agree with autograd through two steps (float64)."""
    name, kw = case
    cls = getattr(descent, name)
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(3, generator=gen, requires_grad=True)
    g1 = torch.randn(3, generator=gen, requires_grad=True)
    g2 = torch.randn(3, generator=gen, requires_grad=True)

    def two_steps(p, g1, g2):
        q = p.clone()
        opt = cls([q], differentiable=True, **kw)
        if hasattr(opt, "train"):
            opt.train()
        for g in (g1, g2):
            q.grad = g
            opt.step()
        return q

    assert torch.autograd.gradcheck(two_steps, (p, g1, g2))


def test_a_differentiable_step_leaves_flat_storage_alone():
    p0 = torch.randn(6, requires_grad=True)
    p = p0.clone()
    opt = descent.Adam([p], lr=0.1, differentiable=True)
    storage = p.untyped_storage().data_ptr()
    p.grad = torch.ones(6)
    opt.step()
    assert p.untyped_storage().data_ptr() == storage and p.grad_fn is not None
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}


def test_fused_and_differentiable_are_refused_as_torch_refuses_them():
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        descent.Adam([torch.nn.Parameter(torch.ones(2))], fused=True, differentiable=True)
