"""Params another tensor holds at the first step (a model ``state_dict()``, a ``.data``
alias) keep their own storage, so their state cannot take a compact format there; once
nothing holds them they move into the flat buffers at a later step."""

from __future__ import annotations

import copy

import pytest
import torch

import descent
from descent.engine.layout import homed


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1))


def _batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(32, 64, generator=g), torch.randn(32, 1, generator=g)


def _train(m, opt, steps):
    for step in steps:
        opt.zero_grad()
        x, y = _batch(step)
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()


def test_a_param_held_at_the_first_step_moves_in_once_released():
    """8-bit Adam with the model's ``state_dict()`` alive at the first step: a warning
    says its state stays float32 for now; after ``del``, a later step moves the params
    into the flat buffers and quantizes their state, and the run stays within 8-bit's
    error of torch.optim's float32 Adam."""
    m = _model()
    ref = copy.deepcopy(m)
    opt = descent.Adam(m.parameters(), lr=1e-2, state_dtype="8bit")
    sd = m.state_dict()
    with pytest.warns(RuntimeWarning, match=r"keep full-precision state.*nothing else holds"):
        _train(m, opt, range(1))
    assert not homed(m[0].weight)
    assert "exp_avg" in opt.state[m[0].weight]  # float32, for now
    assert sd["0.weight"].data_ptr() == m[0].weight.data_ptr()  # (the alias still tracks the param)
    del sd
    _train(m, opt, range(1, 20))
    assert homed(m[0].weight)
    assert "exp_avg.codes" in opt.state[m[0].weight] and "exp_avg" not in opt.state[m[0].weight]
    topt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    _train(ref, topt, range(20))
    for a, b in zip(m.parameters(), ref.parameters()):
        err = ((a - b).abs().max() / b.abs().max()).item()
        assert err <= 5e-2, err


def test_a_param_held_for_good_is_stepped_in_place_and_looked_at_ever_more_rarely():
    """A ``.data`` alias kept for the whole run: the param never moves (the alias keeps
    tracking it) and the numbers are torch.optim's."""
    m = _model()
    ref = copy.deepcopy(m)
    aliases = [p.data for p in m.parameters()]
    opt = descent.Adam(m.parameters(), lr=1e-2)
    _train(m, opt, range(20))
    topt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    _train(ref, topt, range(20))
    for a, p, q in zip(aliases, m.parameters(), ref.parameters()):
        assert a.data_ptr() == p.data_ptr() and not homed(p)
        torch.testing.assert_close(p.detach(), q.detach())
    entry = opt._engine.groups[0]
    assert entry.retry > 20  # looked at again at steps 2, 4, 8, 16: next at 32
