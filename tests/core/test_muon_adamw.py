"""MuonAdamW against torch.optim.Muon + torch.optim.AdamW stepping the same split, and
descent.compose with a whole-tensor rule against the named optimizer it rebuilds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import descent
from descent import rules


class TinyGPT(nn.Module):
    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(2 * width, width)
        self.fc2 = nn.Linear(width, 2 * width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, x):
        h = self.norm(self.embed(x))
        h = h + self.proj(torch.relu(self.fc(h))) + self.proj(torch.relu(self.fc2(h)))
        return self.lm_head(h)


def _loss(model, gen):
    x = torch.randint(0, 11, (4, 5), generator=gen)
    return nn.functional.cross_entropy(model(x).reshape(-1, 11), x.roll(1, 1).reshape(-1))


def test_param_groups_split_hidden_matrices_from_the_rest():
    model = TinyGPT()
    muon, adamw = descent.muon_param_groups(model)
    assert muon["use_muon"] and not adamw["use_muon"]
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(muon["params"]) == ids([model.fc.weight, model.proj.weight, model.fc2.weight])
    assert ids(adamw["params"]) == ids(model.parameters()) - ids(muon["params"])
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    (only,) = descent.muon_param_groups(conv)  # the kernel (not flattened) and the head: AdamW
    assert not only["use_muon"] and len(only["params"]) == 4
    flat = descent.muon_param_groups(conv, flatten_conv=True)
    assert flat[0]["params"] == [conv[0].weight] and flat[0]["flatten"] is True
    with pytest.raises(ValueError, match="no submodule named 'nope'"):
        descent.muon_param_groups(model, head="nope")


def test_matches_torch_muon_plus_adamw_in_one_optimizer():
    torch.manual_seed(0)
    ours, theirs = TinyGPT(), TinyGPT()
    theirs.load_state_dict(ours.state_dict())
    start = [p.detach().clone() for p in ours.parameters()]
    opt = descent.MuonAdamW(ours, lr=0.02, weight_decay=0.01, adamw_lr=3e-3, adamw_weight_decay=0.1)
    muon, adamw = descent.muon_param_groups(theirs)
    ref_muon = torch.optim.Muon(muon["params"], lr=0.02, weight_decay=0.01, momentum=0.95)
    ref_adamw = torch.optim.AdamW(adamw["params"], lr=3e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
    refs = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5) for o in (ref_muon, ref_adamw)]
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(20):
        opt.zero_grad()
        _loss(ours, gen_a).backward()
        opt.step()
        sched.step()
        ref_muon.zero_grad()
        ref_adamw.zero_grad()
        _loss(theirs, gen_b).backward()
        ref_muon.step()
        ref_adamw.step()
        for s in refs:
            s.step()
    hidden = {id(p) for p in descent.muon_param_groups(ours)[0]["params"]}
    for (a, b), x in zip(zip(ours.parameters(), theirs.parameters()), start):
        gap, run = float((a - b).norm()), float((b - x).norm())
        if id(a) in hidden:  # Newton–Schulz in bfloat16 on both sides
            assert gap <= 0.03 * run
        else:
            assert gap <= 1e-5 * max(run, 1e-3)
    sd = opt.state_dict()
    assert [g["lr"] for g in sd["param_groups"]] == [0.02 * 0.25, 3e-3 * 0.25]
    keys = {frozenset(st) for st in sd["state"].values()}
    assert keys == {frozenset({"momentum_buffer"}), frozenset({"step", "exp_avg", "exp_avg_sq"})}
    fresh = descent.MuonAdamW(TinyGPT())
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == 0.02 * 0.25


def test_refuses_params_it_cannot_classify():
    with pytest.raises(ValueError, match="use_muon=True or False"):
        descent.MuonAdamW([torch.nn.Parameter(torch.zeros(2, 2))])
    with pytest.raises(ValueError, match=r"a use_muon group holds a param of shape \(3,\)"):
        descent.MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "use_muon": True}])
    with pytest.raises(TypeError, match="unexpected keyword argument.*betas"):
        descent.MuonAdamW(TinyGPT(), betas=(0.9, 0.99))


def test_flattened_conv_kernel_is_orthogonalised_as_a_matrix():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    p = torch.nn.Parameter(w.clone())
    opt = descent.MuonAdamW([{"params": [p], "use_muon": True, "flatten": True}], lr=0.1, ns_dtype="float32")
    g = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    p.grad = g.clone()
    opt.step()
    # the reference's muon_update: nesterov on the flattened kernel, NS, √max(1, A/B)
    u = (0.05 * g + 0.95 * (0.05 * g)).reshape(4, 27)
    X = u.float() / u.float().norm()
    for _ in range(5):
        G = X @ X.T
        X = 3.4445 * X + (-4.7750 * G + 2.0315 * G @ G) @ X
    expected = w - 0.1 * math.sqrt(max(1, 4 / 27)) * X.double().reshape(4, 3, 3, 3)
    assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-6)


def test_compose_with_a_whole_tensor_rule_rebuilds_muon():
    MyMuon = descent.compose(
        "MyMuon",
        rules.MuonMomentum(nesterov=True),
        rules.Orthogonalize(),
        defaults={"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "ns_dtype": "float32"},
        decoupled=True,
        state_step=False,
    )
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in [(6, 4), (6, 4), (3, 5)]]
    a = [torch.nn.Parameter(x.clone()) for x in init]
    b = [torch.nn.Parameter(x.clone()) for x in init]
    mine, named = MyMuon(a), descent.Muon(b, lr=0.02, ns_dtype="float32")
    for _ in range(10):
        for p, q in zip(a, b):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        mine.step()
        named.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        assert torch.equal(mine.state[p]["momentum_buffer"], named.state[q]["momentum_buffer"])


def test_compose_adam_moments_with_an_orthogonalised_update():
    AdamOrtho = descent.compose(
        "AdamOrtho",
        rules.EMA(),
        rules.EMAOfSquares(),
        rules.Orthogonalize(),
        defaults={"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "ns_dtype": "float32"},
    )
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    p = torch.nn.Parameter(w.clone())
    opt = AdamOrtho([p])
    g = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    p.grad = g.clone()
    opt.step()
    # step 1: m̂ = g, v̂ = g², so the direction is g/(|g| + ε), then orthogonalised
    d = (g / (g.abs() + 1e-8)).float().T
    X = d / d.norm()
    for _ in range(5):
        G = X @ X.T
        X = 3.4445 * X + (-4.7750 * G + 2.0315 * G @ G) @ X
    expected = w - 0.01 * math.sqrt(5 / 3) * X.T.double()
    assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-7)
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}


def test_step_in_backward_is_refused_with_the_reason():
    with pytest.raises(TypeError, match="MuonAdamW steps same-shape tensors together"):
        descent.step_in_backward(None, descent.MuonAdamW(TinyGPT()))
