"""``state_dtype=`` for the rules that see whole tensors (Muon, Adafactor, MuonAdamW's Muon
groups): their state decoded before the step and encoded after it, as the flat engine's
formats are, checked against the float32-state optimizer and the format's own encoding."""

from __future__ import annotations

import copy

import pytest
import torch

import descent
from descent.engine import formats


def _params(seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(128, 64) * 0.1) for _ in range(3)]


def _grads(ps, gen):
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen) * 0.01 + p.detach()


def test_8bit_muon_steps_on_its_decoded_momentum():
    """Step 1 uses the float32 momentum it just computed (the params equal float32 state's)
    and stores its codes; step 2 equals float32 Muon's step from the decoded momentum."""
    a, b = _params(), _params()
    o8 = descent.Muon(a, lr=0.02, state_dtype="8bit")
    of = descent.Muon(b, lr=0.02)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    _grads(a, gen_a), _grads(b, gen_b)
    o8.step(), of.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        st = o8.state[x]
        assert set(st) == {"momentum_buffer.codes", "momentum_buffer.absmax"}
        codes, scales = formats.encode(of.state[y]["momentum_buffer"].reshape(-1))
        assert torch.equal(st["momentum_buffer.codes"].reshape(-1), codes)
        assert torch.equal(st["momentum_buffer.absmax"], scales)
        buf = of.state[y]["momentum_buffer"]
        buf.copy_(formats.decode(codes, scales).reshape(buf.shape))  # what 8-bit state holds
    _grads(a, gen_a), _grads(b, gen_b)
    o8.step(), of.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_bfloat16_muon_state_is_its_momentum_rounded():
    a, b = _params(), _params()
    ob = descent.Muon(a, lr=0.02, state_dtype="bfloat16")
    of = descent.Muon(b, lr=0.02)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    _grads(a, gen_a), _grads(b, gen_b)
    ob.step(), of.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        kept, exact = ob.state[x]["momentum_buffer"], of.state[y]["momentum_buffer"]
        assert kept.dtype == torch.bfloat16
        # stochastically rounded: one of the two bfloat16 neighbours of the exact value,
        # not always the nearest one
        ulp = (exact.abs() * 2.0**-7).clamp_min(2.0**-133)
        assert torch.all((kept.float() - exact).abs() <= ulp), (kept.float() - exact).abs().max()
        assert (kept != exact.to(torch.bfloat16)).any()


def _least_squares(fmt, seed, cls=descent.Muon, steps=150, **kw):
    torch.manual_seed(seed)
    a = torch.randn(512, 128)
    y = a @ (torch.randn(128, 64) * 0.1)
    w = torch.nn.Parameter(torch.zeros(128, 64))
    opt = cls([w], state_dtype=fmt, **kw)
    for _ in range(steps):
        idx = torch.randint(0, 512, (64,))
        loss = ((a[idx] @ w - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ((a @ w - y) ** 2).mean().item()


@pytest.mark.parametrize("fmt", ["8bit", "bfloat16"])
def test_compact_muon_trains_as_float32_muon(fmt):
    base = [_least_squares(None, s, lr=0.02) for s in range(2)]
    got = [_least_squares(fmt, s, lr=0.02) for s in range(2)]
    assert max(got) <= 1.1 * max(base), (got, base)


def test_adafactor_compact_state_where_a_buffer_is_large():
    """Adafactor's factors of a matrix are small (float32 kept); a vector's full second
    moment of ≥ 4,096 elements takes the format."""
    torch.manual_seed(0)
    v = torch.nn.Parameter(torch.randn(8192))
    m = torch.nn.Parameter(torch.randn(128, 64))
    opt = descent.Adafactor([v, m], lr=1e-2, state_dtype="8bit")
    ref_v, ref_m = copy.deepcopy(v), copy.deepcopy(m)
    ref = torch.optim.Adafactor([ref_v, ref_m], lr=1e-2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        for p, q in ((v, ref_v), (m, ref_m)):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert opt.state[v]["variance.codes"].dtype == torch.uint8
    assert opt.state[m]["row_var"].dtype == torch.float32 and "row_var.codes" not in opt.state[m]
    assert (m - ref_m).abs().max() < 1e-6  # float32 factors: torch's numbers
    assert 0 < (v - ref_v).abs().max() / ref_v.abs().max() < 0.05  # 8-bit variance: close, not equal


def test_an_8bit_muon_checkpoint_loads_into_float32_state():
    """Into descent's float32 state (decoded once: the next step equals the 8-bit
    optimizer's), and into torch.optim.Muon through dequantize_state_dict (handed the codes
    as they are, torch finds no "momentum_buffer" and starts one afresh: it never reads
    codes as numbers)."""
    a, b, c = _params(), _params(), _params()
    o8 = descent.Muon(a, lr=0.02, state_dtype="8bit")
    _grads(a, torch.Generator().manual_seed(1))
    o8.step()
    sd = o8.state_dict()
    of = descent.Muon(b, lr=0.02)
    of.load_state_dict(copy.deepcopy(sd))
    t = torch.optim.Muon(c, lr=0.02)
    t.load_state_dict(copy.deepcopy(descent.dequantize_state_dict(sd)))
    for x, y, z in zip(a, b, c):
        y.data.copy_(x.detach())
        z.data.copy_(x.detach())
    for ps in (a, b, c):
        _grads(ps, torch.Generator().manual_seed(3))
    o8.step(), of.step(), t.step()
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y)  # both stepped from the decoded momentum
        assert set(of.state[y]) == {"momentum_buffer"}
        assert of.state[y]["momentum_buffer"].dtype == torch.float32
        assert torch.allclose(t.state[z]["momentum_buffer"], of.state[y]["momentum_buffer"], atol=1e-7)


def test_muon_adamw_keeps_both_kinds_of_group_in_the_format():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    opt = descent.MuonAdamW(model, state_dtype="8bit")
    x = torch.randn(16, 64)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    seen = set()
    for g in opt.param_groups:
        for p in g["params"]:
            names = ("momentum_buffer",) if g["use_muon"] else ("exp_avg", "exp_avg_sq")
            big = p.numel() >= formats.MIN_NUMEL
            for n in names:
                assert (n + ".codes" in opt.state[p]) == big and (n in opt.state[p]) == (not big), (
                    n,
                    p.shape,
                )
            seen.add((bool(g["use_muon"]), big))
    assert (True, True) in seen and (False, False) in seen  # Muon's matrices, AdamW's biases
