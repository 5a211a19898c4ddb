"""torch's own optimizer test database (``torch.testing._internal.common_optimizers.optim_db``,
shipped in the wheel) run against descent: every curated config of each torch-named
optimizer gives torch.optim's numbers, plain and ``differentiable=True``, and every error
input raises torch's exception type with a message its regex matches."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import descent
from descent.optim import RuleOptimizer

common = pytest.importorskip("torch.testing._internal.common_optimizers")

#: optim_db entries with a descent class of the same name
INFOS = [
    info
    for info in common.optim_db
    if isinstance(getattr(descent, info.name, None), type)
    and issubclass(getattr(descent, info.name), RuleOptimizer)
]
#: every config plain in float64 and float32, and differentiable in float64
CONFIGS = [
    (info, i, flag, dtype)
    for info in INFOS
    for i, _ in enumerate(info.optim_inputs_func(device="cpu"))
    for flag, dtype in (("plain", torch.float64), ("plain", torch.float32), ("differentiable", torch.float64))
    if flag == "plain" or "differentiable" in info.supported_impls  # (Muon and Adafactor have none)
]
ERRORS = [
    (info, i)
    for info in INFOS
    for i, _ in enumerate(info.optim_error_inputs_func(device="cpu", dtype=torch.float32))
]


def test_every_torch_named_optimizer_is_covered():
    assert {i.name for i in INFOS} >= {
        "Muon",
        "Adafactor",
        "SGD",
        "Adagrad",
        "RMSprop",
        "Adadelta",
        "Adam",
        "AdamW",
        "NAdam",
        "Adamax",
    }


def _model(dtype):
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()
    ).to(dtype)
    return model


def _run(cls, kwargs, dtype, differentiable):
    """torch's _test_derived_optimizers loop: 7 steps, no gradients at step 3. With
    ``differentiable`` the params are non-leaf copies (a leaf cannot be updated in place
    under autograd, with torch.optim either) and the loss keeps the graph."""
    model = _model(dtype)
    x = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=dtype).reshape(3, 2)
    if differentiable:
        params = [p.detach().clone().requires_grad_().clone() for p in model.parameters()]
    else:
        params = list(model.parameters())
    if cls.__name__ == "Muon":  # hidden matrices only: the biases would be refused
        params = [p for p in params if p.ndim == 2]
    opt = cls(params, **kwargs, **({"differentiable": True} if differentiable else {}))
    for i in range(7):
        for p in params:
            p.grad = None
        if i != 3:
            w1, b1, w2, b2 = model.parameters() if len(params) == 2 else params
            out = torch.sigmoid(torch.sigmoid(x @ w1.T + b1) @ w2.T + b2)
            grads = torch.autograd.grad(out.sum(), [w1, b1, w2, b2])
            grads = [g for q, g in zip([w1, b1, w2, b2], grads) if any(q is p for p in params)]
            for p, g in zip(params, grads):
                p.grad = g
        opt.step()
    state = [{k: v.detach().clone() for k, v in opt.state[p].items()} for p in params]
    # (the gradients of a differentiable step are compared in test_differentiable.py: through
    # seven steps torch.optim's own graph cannot be differentiated, its in-place state
    # updates overwrite what autograd kept)
    return [p.detach().clone() for p in params], state, [p.requires_grad for p in params]


def _kwargs(cls, info, config, flag):
    kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in config.kwargs.items()}
    if cls is info.optim_cls and flag == "plain" and "foreach" in info.supported_impls:
        kwargs["foreach"] = False  # torch's reference for-loop
    return kwargs


@pytest.mark.parametrize(
    "info,index,flag,dtype", CONFIGS, ids=[f"{i.name}-{n}-{f}-{str(d)[6:]}" for i, n, f, d in CONFIGS]
)
def test_config_matches_torch(info, index, flag, dtype):
    config = info.optim_inputs_func(device="cpu")[index]
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    if info.name == "Muon":  # Newton–Schulz in bfloat16 (8-bit mantissa), batched as torch's is not
        tol = {"rtol": 1e-2, "atol": 1e-3}
    runs = []
    before = torch.get_default_dtype()
    if flag == "differentiable":
        # torch.optim's differentiable Adam, AdamW and NAdam compute their bias corrections
        # from the step tensor, float32 unless float64 is the default dtype (3e-7 apart
        # from the float64 corrections descent and torch's plain path use)
        torch.set_default_dtype(torch.float64)
    try:
        runs += [
            _run(cls, _kwargs(cls, info, config, flag), dtype, flag == "differentiable")
            for cls in (info.optim_cls, getattr(descent, info.name))
        ]
    finally:
        torch.set_default_dtype(before)
    (theirs, their_state, their_grad), (mine, my_state, my_grad) = runs[-2:]
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(my_state, their_state):
        assert a.keys() == b.keys()
        for k in b:
            torch.testing.assert_close(a[k].to(b[k].dtype), b[k], **tol, msg=k)
    assert my_grad == their_grad  # a differentiable step's params still carry a graph


@pytest.mark.parametrize("info,index", ERRORS, ids=[f"{i.name}-{n}" for i, n in ERRORS])
def test_error_input_raises_torchs_error(info, index):
    error = info.optim_error_inputs_func(device="cpu", dtype=torch.float32)[index]
    given = error.optimizer_error_input
    cls = getattr(descent, info.name)
    kind = error.error_type
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if not issubclass(kind, Warning) else "default")
        context = pytest.warns if issubclass(kind, Warning) else pytest.raises
        with context(kind, match=error.error_regex) as caught:
            opt = cls(given.params, **given.kwargs)
            if error.error_on == common.OptimizerErrorEnum.STEP_ERROR:
                opt.step()
    if not issubclass(kind, Warning):  # the same class, not a subclass of torch's
        assert type(caught.value) is kind, (type(caught.value), kind)
    assert re.search(
        error.error_regex, str(caught.value if not issubclass(kind, Warning) else caught[0].message)
    )
