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
    }
    family = {e.key for e in catalog.ENTRIES if e.sgd_family}
    assert family == {"sgd", "momentum", "nag", "ema"}  # lion (a sign rule) is neither


def test_torch_counterpart_and_symbol():
    assert catalog.get("amsgrad").torch is torch.optim.Adam
    assert catalog.get("nadam").torch is torch.optim.NAdam
    assert catalog.get("lion").torch is None
    assert catalog.get("adamw").symbol == "λ" and catalog.get("sgd").symbol is None
    assert catalog.symbol("rho") == "ρ" and catalog.symbol("eps") == "eps"
