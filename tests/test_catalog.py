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


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    )


def test_muon_entry_is_the_reference_recipe_with_one_tuned_lr():
    """The arena's Muon + AdamW: hidden matrices on Muon at the tuned lr, the rest on
    AdamW at lr × the ratio (the knob); the same numbers as MuonAdamW built by hand."""
    entry = catalog.get("muon")
    assert entry.model and entry not in catalog.ENTRIES and "muon" in catalog.ARENA
    assert entry.default_lr == 0.02 and entry.default("adamw_ratio") == 0.015  # 3e-4 / 0.02
    assert not entry.adaptive and not entry.sgd_family  # its rule: the Muon groups'
    a, b = _mlp(), _mlp()
    ours = entry.make(a, lr=0.05, adamw_ratio=0.1)
    ref = type(ours)(b, lr=0.05, adamw_lr=0.05 * 0.1)
    assert [(g["use_muon"], g["lr"]) for g in ours.param_groups] == [(True, 0.05), (False, 0.05 * 0.1)]
    x = torch.randn(16, 6)
    for _ in range(5):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_an_entry_built_over_a_model_has_no_trajectory_on_a_surface():
    from descent.landscapes import gallery

    with pytest.raises(ValueError, match="'muon' .* no trajectory of a single point"):
        catalog.select("adam,muon", points=True)
    with pytest.raises(ValueError, match="'muon'"):
        gallery.render_gallery("/tmp/unused", optimizers=["muon"])  # refused before drawing
    assert [e.key for e in catalog.select("adam,muon")] == ["adam", "muon"]  # the arena's select
