"""The catalog's facts are read from the classes, not kept by hand: defaults from the
signature, adaptivity from the rule, the torch.optim counterpart by name."""

from __future__ import annotations

import pytest
import torch

from descent import catalog


def test_defaults_come_from_the_class_signature():
    for entry in catalog.ENTRIES:
        built = entry.make([torch.nn.Parameter(torch.zeros(1))], compile=False)
        group = built.param_groups[0]
        assert entry.default_lr == group["lr"]
        if entry.knob is not None:
            name = entry.knob[0]
            assert entry.default(name) == (tuple(group[name]) if name == "betas" else group[name])
    assert catalog.get("momentum").default("momentum") == 0.9  # the entry's fixed setting
    with pytest.raises(ValueError, match="SGD has no setting 'rho'"):
        catalog.get("sgd").default("rho")


def test_adaptive_and_sgd_family_are_read_from_the_rule():
    adaptive = {e.key for e in catalog.ENTRIES if e.adaptive}
    assert adaptive == {
        "adagrad",
        "adadelta",
        "rmsprop",
        "adam",
        "nadam",
        "adamw",
        "amsgrad",
        "adamax",
        "radam",
        "sfadamw",
        "adopt",
        "adafactor",
    }
    family = {e.key for e in catalog.ENTRIES if e.sgd_family}
    # lion (a sign rule) and Schedule-Free SGD (an averaging step) are neither
    assert family == {"sgd", "momentum", "nag", "ema"}


def test_torch_counterpart_and_symbol():
    assert catalog.get("amsgrad").torch is torch.optim.Adam
    assert catalog.get("nadam").torch is torch.optim.NAdam
    assert catalog.get("lion").torch is None
    assert catalog.get("adamw").symbol == "λ" and catalog.get("sgd").symbol is None
    assert catalog.symbol("rho") == "ρ" and catalog.symbol("eps") == "eps"


def test_set_mode_moves_schedule_free_params_and_leaves_others_alone():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = catalog.get("sfadamw").make([p], lr=0.1)
    catalog.set_mode(opt, True)
    for _ in range(3):
        p.grad = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
        opt.step()
    y = p.detach().clone()
    catalog.set_mode(opt, False)
    x = p.detach().clone()
    z = opt.state[p]["z"]
    assert not torch.equal(x, y)
    assert torch.allclose(y, 0.1 * z + 0.9 * x, rtol=0, atol=1e-14)  # y = (1 − β₁)z + β₁x
    q = torch.nn.Parameter(torch.ones(3))
    plain = catalog.get("adam").make([q])
    catalog.set_mode(plain, False)  # no train()/eval(): nothing happens
    assert torch.equal(q.detach(), torch.ones(3))
