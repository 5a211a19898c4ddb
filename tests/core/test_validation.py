"""Bad input: a clear error naming the argument and value, and nothing touched."""

from __future__ import annotations

import pytest
import torch

import descent

P = lambda: [torch.nn.Parameter(torch.ones(3))]  # noqa: E731

BAD = [
    ("SGD", {"lr": -0.1}, ValueError, "learning rate: -0.1"),
    ("SGD", {"lr": 0.1, "momentum": -0.5}, ValueError, "momentum value: -0.5"),
    ("SGD", {"lr": 0.1, "weight_decay": -1}, ValueError, "weight_decay value: -1"),
    ("SGD", {"lr": 0.1, "nesterov": True}, ValueError, "Nesterov momentum requires a momentum"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, ValueError, "dampening=0.1"),
    ("SGD", {"lr": "fast"}, TypeError, "learning rate: expected a number, got 'fast'"),
    ("Adam", {"lr": float("nan")}, ValueError, "learning rate: nan"),
    ("Adam", {"eps": -1e-8}, ValueError, "epsilon value: -1e-08"),
    ("Adam", {"betas": (1.0, 0.999)}, ValueError, "beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (0.9, 1.5)}, ValueError, "beta parameter at index 1: 1.5"),
    ("Adam", {"betas": (0.9, -0.1)}, ValueError, "beta parameter at index 1: -0.1"),
    ("Adam", {"betas": 0.9}, ValueError, "expected a pair"),
    ("AdamW", {"weight_decay": -0.01}, ValueError, "weight_decay value: -0.01"),
    ("Adam", {"amsgrad": "yes"}, TypeError, "amsgrad"),
    ("Adagrad", {"lr_decay": -1}, ValueError, "lr_decay value: -1"),
    ("Adagrad", {"initial_accumulator_value": -1}, ValueError, "initial_accumulator_value value: -1"),
    ("RMSprop", {"alpha": -0.5}, ValueError, "alpha value: -0.5"),
    ("Adadelta", {"rho": 1.5}, ValueError, "rho value: 1.5"),
    ("NAdam", {"momentum_decay": -1}, ValueError, "momentum_decay value: -1"),
    ("Lion", {"betas": (0.9, 2)}, ValueError, "beta parameter at index 1: 2"),
    ("RAdam", {"lr": torch.tensor([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("Adam", {"betas": (0.9, torch.tensor(0.99))}, ValueError, "betas must be either both floats"),
    ("Adam", {"lr": torch.tensor(0.1), "foreach": True}, ValueError, "lr as a Tensor is not supported"),
]


@pytest.mark.parametrize("name,kw,exc,msg", BAD, ids=[f"{n}-{k}" for n, k, _, _ in BAD])
def test_bad_hyperparameter(name, kw, exc, msg):
    params = P()
    before = params[0].detach().clone()
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        getattr(descent, name)(params, **kw)
    assert torch.equal(params[0].detach(), before)


def test_non_tensor_params():
    with pytest.raises(TypeError, match="optimizer can only optimize Tensors"):
        descent.Adam([torch.nn.Parameter(torch.ones(2)), 3.0])
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        descent.Adam(torch.nn.Parameter(torch.ones(2)))


def test_empty_and_duplicate_params():
    with pytest.raises(ValueError, match="empty parameter list"):
        descent.Adam([])
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="more than one parameter group"):
        descent.Adam([{"params": [p]}, {"params": [p]}])


def test_bad_param_group_leaves_optimizer_unchanged():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = descent.Adam([a])
    with pytest.raises(ValueError, match="beta parameter at index 0: 1.2"):
        opt.add_param_group({"params": [b], "betas": (1.2, 0.9)})
    with pytest.raises(ValueError, match="learning rate: -1"):
        opt.add_param_group({"params": [b], "lr": -1})
    assert len(opt.param_groups) == 1


def test_sparse_gradients_are_refused_before_anything_moves():  # (test_sparse.py: each optimizer)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    dense = torch.nn.Parameter(torch.ones(3))
    opt = descent.Adam([{"params": [dense]}, {"params": emb.parameters()}], lr=0.1)
    before = (dense.detach().clone(), emb.weight.detach().clone())
    dense.grad = torch.ones(3)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        opt.step()
    assert torch.equal(dense.detach(), before[0]) and torch.equal(emb.weight.detach(), before[1])
    assert len(opt.state) == 0


def test_bad_engine_settings():
    with pytest.raises(ValueError, match="compile setting: 'sometimes'"):
        descent.Adam(P(), compile="sometimes")
    with pytest.raises(TypeError, match="flat setting: 'yes'"):
        descent.Adam(P(), flat="yes")


def test_compose_rejects_unknown_keyword():
    from descent import rules

    Opt = descent.compose("Opt", rules.EMA(beta="beta", bias_correction=False), defaults={"beta": 0.9})
    with pytest.raises(TypeError, match="unexpected keyword argument.*gamma"):
        Opt(P(), gamma=0.5)
