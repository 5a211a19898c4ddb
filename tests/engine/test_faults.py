"""What torch.optim keeps true that a flat engine could silently break: memory other
tensors alias, gradients replaced by hand, NaNs, and torch.compile around the step."""

from __future__ import annotations

import multiprocessing as mp
import warnings

import pytest
import torch

import descent
from descent.engine.layout import homed


def _sgd_pair(make):
    """The same script on torch.optim.SGD and descent.SGD; returns both results."""
    return make(torch.optim.SGD), make(descent.SGD)


# -- memory somebody else holds is never moved -------------------------------------------
def test_a_param_viewing_a_users_buffer_keeps_updating_that_buffer():
    def run(cls):
        buf = torch.zeros(4, dtype=torch.float64)
        p = torch.nn.Parameter(buf.view(2, 2))
        opt = cls([p], lr=0.1)
        for _ in range(2):
            p.grad = torch.ones(2, 2, dtype=torch.float64)
            opt.step()
        return buf

    ref, got = _sgd_pair(run)
    assert torch.equal(got, ref) and ref[0].item() == pytest.approx(-0.2)


def test_a_state_dict_taken_before_the_first_step_keeps_tracking_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    sd = model.state_dict()  # holds aliases of the weights
    opt = descent.Adam(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    assert torch.equal(sd["weight"], model.weight) and torch.equal(sd["bias"], model.bias)
    assert not homed(model.weight)
    del sd  # nothing aliases them any more: the next optimizer gets flat storage
    opt2 = descent.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt2.step()
    assert homed(model.weight)


def test_a_data_alias_held_by_the_user_keeps_tracking():
    p = torch.nn.Parameter(torch.zeros(8))
    alias = p.data
    opt = descent.SGD([p], lr=1.0)
    p.grad = torch.ones(8)
    opt.step()
    assert torch.equal(alias, torch.full((8,), -1.0))


def _hogwild_worker(model, steps):
    opt = descent.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()


def test_shared_memory_params_are_updated_in_place_for_other_processes():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).share_memory()
    before = [p.detach().clone() for p in model.parameters()]
    proc = mp.get_context("spawn").Process(target=_hogwild_worker, args=(model, 2))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    for p, b in zip(model.parameters(), before):  # the parent sees the worker's steps
        torch.testing.assert_close(p.detach(), b - 1.0)
    opt = descent.SGD(model.parameters(), lr=0.5)  # and a step here stays in shared memory
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(p.is_shared() for p in model.parameters())


# -- gradients replaced behind the engine's back ------------------------------------------
@pytest.mark.parametrize("how", ["data", "set_"])
def test_a_gradient_whose_memory_is_replaced_is_used(how):
    def run(cls):
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = cls([p], lr=1.0)
        p.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
        opt.zero_grad(set_to_none=False)
        new = torch.full((3,), 5.0, dtype=torch.float64)
        if how == "data":
            p.grad.data = new
        else:
            p.grad.set_(new)
        out = []
        for _ in range(4):
            opt.step()
            out.append(p.detach().clone())
        return torch.stack(out)

    ref, got = _sgd_pair(run)
    assert torch.equal(got, ref)
    assert ref[-1, 0].item() == -21.0


@pytest.mark.parametrize(
    "bad, what",
    [(torch.ones(4), r"shape \(4,\)"), (torch.ones(3, dtype=torch.float64), r"dtype torch\.float64")],
)
def test_a_wrong_gradient_assigned_by_hand_raises_naming_the_param_before_any_change(bad, what):
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = descent.Adam([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()
    st = opt.state[b]
    before = [a.detach().clone(), b.detach().clone(), st["exp_avg"].clone(), st["step"].clone()]
    b.grad.data = bad
    with pytest.raises(RuntimeError, match=rf"param 1 of param group 0 .* {what}"):
        opt.step()
    after = [a.detach(), b.detach(), opt.state[b]["exp_avg"], opt.state[b]["step"]]
    assert all(torch.equal(x, y) for x, y in zip(before, after))


# -- non-finite values are never hidden ---------------------------------------------------
@pytest.mark.parametrize("compile", [False, True])
def test_lion_carries_a_nan_or_inf_gradient_to_the_param(compile):
    p = torch.nn.Parameter(torch.ones(64))
    opt = descent.Lion([p], lr=0.1, compile=compile)
    g = torch.ones(64)
    g[3], g[9] = float("nan"), float("inf")
    p.grad = g
    opt.step()
    assert p[3].isnan() and p[9].isnan()
    finite = torch.ones(64, dtype=torch.bool)
    finite[[3, 9]] = False
    assert torch.equal(p.detach()[finite], torch.full((62,), 0.9))


# -- torch.compile around the step -------------------------------------------------------
def test_torch_compile_around_step_runs_the_step_once_per_call_without_recompiling():
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    torch.manual_seed(0)
    m1 = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    m2 = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    m2.load_state_dict(m1.state_dict())
    opt, ref = descent.Adam(m1.parameters(), lr=1e-2), torch.optim.Adam(m2.parameters(), lr=1e-2)
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)

    @torch.compile
    def step():
        opt.step()

    compiled = torch.compile(m1)  # and the model compiled too, as users do
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            for m, o in ((compiled, None), (m2, ref)):
                m.zero_grad()
                torch.nn.functional.mse_loss(m(x), y).backward()
                step() if o is None else o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert counters["stats"]["unique_graphs"] <= 3  # model forward (+ backward), never the step
    assert not [w for w in caught if "descent" in str(w.filename) or "graph break" in str(w.message).lower()]
