"""Sparse gradients: SGD and Adagrad step them with torch.optim's numbers (the rows the
gradient names; the state dense); the other optimizers refuse them with torch's error."""

from __future__ import annotations

import pytest
import torch
from optim_cases import compare_state, rel_err

import descent

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")

SUPPORTED = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.01, "maximize": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "dampening": 0.0}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "maximize": True}),
]


def _models(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.ModuleDict({"emb": torch.nn.Embedding(50, 4, sparse=True), "out": torch.nn.Linear(4, 1)})
    b = torch.nn.ModuleDict({"emb": torch.nn.Embedding(50, 4, sparse=True), "out": torch.nn.Linear(4, 1)})
    b.load_state_dict(a.state_dict())
    return a, b


def _loss(model, ids):
    return model["out"](model["emb"](ids)).pow(2).mean()


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize("case", SUPPORTED, ids=lambda c: f"{c[0]}-{','.join(c[1])}")
def test_embedding_trains_as_with_torch(case, flat):
    name, kw = case
    ours, theirs = _models()
    opt = getattr(descent, name)(ours.parameters(), flat=flat, **kw)
    ref = getattr(torch.optim, name)(theirs.parameters(), **kw)
    gen = torch.Generator().manual_seed(1)
    untouched = ours["emb"].weight.detach()[40:].clone()
    for _ in range(30):
        ids = torch.randint(0, 40, (16,), generator=gen)  # rows 40… never named; repeats
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            _loss(model, ids).backward()
            o.step()
        assert ours["emb"].weight.grad.is_sparse  # the gradient is left as autograd made it
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert rel_err(a, b) <= 1e-5
    if "momentum" not in kw:
        assert torch.equal(ours["emb"].weight.detach()[40:], untouched)
    if name == "Adagrad":
        compare_state(opt, ref, 1e-5)


@pytest.mark.parametrize("name,kw", [("SGD", {"lr": 1e-3}), ("Adagrad", {"lr": 0.1})])
def test_uncoalesced_sparse_gradients_match_dense_ones(name, kw):
    """torch's test_rosenbrock_sparse: cyclic coordinate descent on Rosenbrock with an
    uncoalesced sparse gradient (an index repeated) and the same gradient dense."""
    x = torch.tensor([1.5, 1.5], dtype=torch.float64)
    sp, de = torch.nn.Parameter(x.clone()), torch.nn.Parameter(x.clone())
    o_sp, o_de = getattr(descent, name)([sp], **kw), getattr(descent, name)([de], **kw)
    ref = torch.nn.Parameter(x.clone())
    o_ref = getattr(torch.optim, name)([ref], **kw)
    for i in range(400):
        for p, opt, sparse in ((sp, o_sp, True), (de, o_de, False), (ref, o_ref, True)):
            a, b = p.detach()
            grad = torch.stack((-400 * a * (b - a**2) - 2 * (1 - a), 200 * (b - a**2)))
            j = i % 2
            v = grad[j]
            g = torch.sparse_coo_tensor([[j, j]], torch.stack((v / 4, v - v / 4)), (2,))
            p.grad = g if sparse else g.to_dense()
            opt.step()
    assert torch.allclose(sp, de, rtol=1e-12, atol=0)
    assert torch.allclose(sp, ref, rtol=1e-10, atol=0)
    assert not torch.equal(sp.detach(), x)


def test_sparse_and_dense_params_in_one_step():
    ours, theirs = _models(2)
    opt = descent.Adagrad(ours.parameters(), lr=0.1)
    ref = torch.optim.Adagrad(theirs.parameters(), lr=0.1)
    for step in range(5):
        ids = torch.tensor([1, 2, 2, 7 + step])
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            _loss(model, ids).backward()
            if step == 3:
                model["out"].weight.grad = None  # one dense param without a gradient
            o.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert rel_err(a, b) <= 1e-6
    compare_state(opt, ref, 1e-6)


@pytest.mark.parametrize(
    "name,message",
    [
        ("Adam", "Adam does not support sparse gradients, please consider SparseAdam instead"),
        ("AdamW", "Adam does not support sparse gradients, please consider SparseAdam instead"),
        ("RMSprop", "RMSprop does not support sparse gradients"),
        ("Adadelta", "Adadelta does not support sparse gradients"),
        ("NAdam", "NAdam does not support sparse gradients"),
        ("RAdam", "RAdam does not support sparse gradients"),
        ("Adamax", "Adamax does not support sparse gradients"),
        ("Lion", "Lion does not support sparse gradients"),
    ],
)
def test_other_optimizers_refuse_with_torchs_error(name, message):
    ours, theirs = _models()
    errors = []
    for lib, model in ((descent, ours), (torch.optim, theirs)):
        if not hasattr(lib, name):
            continue
        opt = getattr(lib, name)(model.parameters())
        before = [p.detach().clone() for p in model.parameters()]
        _loss(model, torch.tensor([1, 2])).backward()
        with pytest.raises(RuntimeError) as info:
            opt.step()
        errors.append(str(info.value))
        if lib is descent:  # refused before anything moved
            assert all(torch.equal(a.detach(), b) for a, b in zip(model.parameters(), before))
    assert errors[0] == message and all(e == message for e in errors)


def test_adagrad_refuses_weight_decay_with_sparse_gradients():
    ours, _ = _models()
    opt = descent.Adagrad(ours.parameters(), weight_decay=0.1)
    _loss(ours, torch.tensor([1])).backward()
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        opt.step()
