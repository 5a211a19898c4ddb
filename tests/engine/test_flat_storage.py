"""Flat storage: params and grads become views of one buffer, behaviour stays torch's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import descent
from descent.engine import CHUNK

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import feed, make_pair, rel_err  # noqa: E402


def _storage(t):
    return t.untyped_storage().data_ptr()


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)


def test_params_live_in_one_buffer_and_the_step_leaves_gradients_alone():
    """The step reads gradients where backward left them: ``p.grad`` stays the same
    tensor, unwritten (torch's test_grads_are_never_inplaced_into)."""
    model = _model()
    params = list(model.parameters())
    opt = descent.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 5)
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        grads = [p.grad for p in params]
        before = [(g._version, g.clone()) for g in grads]
        opt.step()
        assert all(p.grad is g for p, g in zip(params, grads))
        assert all(g._version == v and torch.equal(g, c) for g, (v, c) in zip(grads, before))
    assert len({_storage(p) for p in params}) == 1
    assert list(model.parameters()) == params


def test_zero_grad_keeping_tensors_puts_gradients_in_one_buffer():
    model = _model()
    params = list(model.parameters())
    opt = descent.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 5)
    model(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=False)  # zeroed views of one flat gradient buffer
    assert len({_storage(p.grad) for p in params}) == 1
    grad_views = [p.grad for p in params]
    assert not any(v.any() for v in grad_views)
    opt.zero_grad(set_to_none=False)  # one memset, views kept
    assert all(p.grad is v for p, v in zip(params, grad_views))
    model(x).sum().backward()
    once = [p.grad.clone() for p in params]
    model(x).sum().backward()  # no step in between: accumulates into the flat buffer
    for p, view, g1 in zip(params, grad_views, once):
        assert p.grad is view
        torch.testing.assert_close(p.grad, 2 * g1)
    opt.step()
    assert all(p.grad is v for p, v in zip(params, grad_views))


def test_model_zero_grad_then_backward_is_gathered_and_matches_torch():
    m1, m2 = _model(dtype=torch.float64), _model(dtype=torch.float64)
    opt, ref = descent.Adam(m1.parameters(), lr=0.01), torch.optim.Adam(m2.parameters(), lr=0.01)
    x = torch.randn(6, 5, dtype=torch.float64)
    for _ in range(10):
        for m, o in ((m1, opt), (m2, ref)):
            m.zero_grad()  # the module's, not the optimizer's: grads become None
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-12


def test_reassigned_param_data_is_rehomed_not_ignored():
    m1, m2 = _model(dtype=torch.float64), _model(dtype=torch.float64)
    opt, ref = descent.Adam(m1.parameters(), lr=0.01), torch.optim.Adam(m2.parameters(), lr=0.01)
    x = torch.randn(6, 5, dtype=torch.float64)
    for step in range(12):
        if step == 6:  # e.g. vector_to_parameters, or any code that sets .data
            for m in (m1, m2):
                m[0].weight.data = m[0].weight.data.clone() * 0.5
        for m, o in ((m1, opt), (m2, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-12
    assert len({_storage(p) for p in m1.parameters()}) == 1


def test_mixed_dtypes_in_one_group():
    a64, b32 = torch.randn(5, dtype=torch.float64), torch.randn(4, dtype=torch.float32)
    ours = [torch.nn.Parameter(a64.clone()), torch.nn.Parameter(b32.clone())]
    theirs = [torch.nn.Parameter(a64.clone()), torch.nn.Parameter(b32.clone())]
    opt, ref = descent.NAdam(ours, lr=0.01), torch.optim.NAdam(theirs, lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for step in range(30):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    assert rel_err(ours[0], theirs[0]) <= 1e-12
    assert rel_err(ours[1], theirs[1]) <= 1e-6
    assert ours[0].dtype == torch.float64 and ours[1].dtype == torch.float32


def test_flat_false_keeps_the_users_storage():
    model = _model()
    ptrs = [p.data_ptr() for p in model.parameters()]
    opt = descent.Adam(model.parameters(), flat=False)
    model(torch.randn(2, 5)).sum().backward()
    opt.step()
    assert [p.data_ptr() for p in model.parameters()] == ptrs


def test_shared_storage_params_keep_sharing():
    base = torch.randn(10)
    a = torch.nn.Parameter(base[:5])  # two params that are windows of one tensor
    b = torch.nn.Parameter(base[5:])
    opt = descent.SGD([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(5), torch.ones(5)
    opt.step()
    assert _storage(a) == _storage(b) == _storage(base)
    torch.testing.assert_close(base, torch.cat([a.detach(), b.detach()]))


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_no_temporaries_proportional_to_the_parameter_count(compile):
    from torch.profiler import ProfilerActivity, profile

    params = [torch.nn.Parameter(torch.randn(1 << 20)) for _ in range(4)]  # 16 MB
    opt = descent.Adam(params, compile=compile)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state allocated (and kernel compiled) on the first step
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    biggest = max([e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0], default=0)
    # one chunk in float64 at most (the exact eager square root), whatever the model size
    assert biggest <= CHUNK * 8, f"a {biggest}-byte temporary during the step"


def test_parity_with_torch_on_the_flat_path_of_a_real_model():
    ours, theirs, opt, ref = make_pair("RAdam", {"lr": 0.01}, flat=True, compile=False)
    gen = torch.Generator().manual_seed(7)
    for step in range(50):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10


def _train(model, opt, x, steps):
    for _ in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def test_a_second_optimizer_over_the_same_params_gets_flat_storage():
    """Build an optimizer again over params an earlier one re-homed (a notebook cell run
    twice, a second training phase): the new one gets one flat buffer and one run, and
    the numbers are torch.optim's."""
    m1, m2 = _model(dtype=torch.float64), _model(dtype=torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64)
    _train(m1, descent.Adam(m1.parameters(), lr=0.01), x, 3)
    _train(m2, torch.optim.Adam(m2.parameters(), lr=0.01), x, 3)
    opt = descent.Adam(m1.parameters(), lr=0.02, weight_decay=0.1)
    _train(m1, opt, x, 4)
    _train(m2, torch.optim.Adam(m2.parameters(), lr=0.02, weight_decay=0.1), x, 4)
    (bucket,) = opt._engine.groups[0].buckets
    assert bucket.flat and bucket.uniform
    assert {_storage(p) for p in m1.parameters()} == {_storage(bucket.P)}
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-12


def test_a_garbage_collected_optimizers_buffer_is_rehomed():
    import gc

    model = _model()
    x = torch.randn(6, 5)
    _train(model, descent.SGD(model.parameters(), lr=0.1, momentum=0.9), x, 2)
    gc.collect()  # the optimizer is gone; its buffer lives on through the params
    opt = descent.SGD(model.parameters(), lr=0.1)
    _train(model, opt, x, 1)
    (bucket,) = opt._engine.groups[0].buckets
    assert bucket.flat and {_storage(p) for p in model.parameters()} == {_storage(bucket.P)}


def test_two_optimizers_stepping_the_same_params_stay_right_and_warn():
    """Alternating two descent optimizers over one model: each step moves the params into
    the stepping optimizer's buffer, neither corrupts the other's state, the numbers are
    torch.optim's, and after a few moves a warning says what it costs."""
    m1, m2 = _model(dtype=torch.float64), _model(dtype=torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64)
    ours = [descent.Adam(m1.parameters(), lr=0.01), descent.SGD(m1[0].parameters(), lr=0.05, momentum=0.9)]
    theirs = [
        torch.optim.Adam(m2.parameters(), lr=0.01),
        torch.optim.SGD(m2[0].parameters(), lr=0.05, momentum=0.9),
    ]
    with pytest.warns(RuntimeWarning, match="keeps taking this") as record:
        for step in range(12):
            _train(m1, ours[step % 2], x, 1)
            _train(m2, theirs[step % 2], x, 1)
    assert sorted(str(w.message).split("this ")[1][:4] for w in record) == ["Adam", "SGD'"]
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-12
    for o, r in zip(ours, theirs):
        for (_, sa), (_, sb) in zip(o.state_dict()["state"].items(), r.state_dict()["state"].items()):
            for key in sb:
                assert rel_err(sa[key], sb[key]) <= 1e-12, key


def test_a_window_of_a_users_buffer_is_not_taken():
    """A param that is a window into a larger tensor of the user's stays there (it may be
    shared on purpose); only descent's own buffers are moved freely."""
    base = torch.zeros(20)
    p = torch.nn.Parameter(base[4:14])
    opt = descent.SGD([p], lr=1.0)
    p.grad = torch.ones(10)
    opt.step()
    assert _storage(p) == _storage(base) and base[4:14].eq(-1).all() and base[:4].eq(0).all()


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_per_tensor_runs_have_no_temporaries_proportional_to_the_tensor(compile):
    from torch.profiler import ProfilerActivity, profile

    params = [torch.nn.Parameter(torch.randn(2048, 2048))]  # 16 MB, kept where it is
    opt = descent.Adam(params, flat=False, compile=compile)
    params[0].grad = torch.randn_like(params[0])
    opt.step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    biggest = max([e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0], default=0)
    assert biggest <= CHUNK * 8, f"a {biggest}-byte temporary during the step"
