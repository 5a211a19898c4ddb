"""Muon and Adafactor, the whole-tensor rules, against torch.optim's classes and formulas:
numbers, state layout, checkpoints both ways, errors, and edits between steps."""

from __future__ import annotations

import io
import math

import pytest
import torch
from optim_cases import compare_state, rel_err

import descent

MATRICES = [(6, 4), (4, 6), (6, 4), (5, 5), (6, 4), (4, 6)]  # same shapes batch together
ADAFACTOR_SHAPES = [(7, 5), (5,), (), (3, 2, 4), (11,), (2, 1), (7, 5)]


def _pair(shapes, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]
    return [torch.nn.Parameter(x.clone()) for x in init], [torch.nn.Parameter(x.clone()) for x in init], init


def _feed(ours, theirs, step, gen, skip=True):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if skip and (step + 2 * i) % 9 == 4:  # now and then a param without a gradient
            a.grad = b.grad = None
            continue
        g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()


def _through_disk(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# -- Muon -------------------------------------------------------------------------------
MUON_KW = [
    {},
    {"lr": 0.02, "weight_decay": 0.0},
    {"lr": 0.01, "nesterov": False, "momentum": 0.8},
    {"lr": 0.01, "adjust_lr_fn": "match_rms_adamw", "ns_steps": 6},
    {"lr": torch.tensor(0.01), "ns_coefficients": (3.4, -4.7, 2.0)},
]


def _travel_ratio(ours, theirs, init):
    """‖ours − torch's‖ over ‖torch's − start‖, all params together."""
    gap = math.sqrt(sum(float((a - b).detach().double().pow(2).sum()) for a, b in zip(ours, theirs)))
    run = math.sqrt(sum(float((b - x).detach().double().pow(2).sum()) for b, x in zip(theirs, init)))
    return gap / run


@pytest.mark.parametrize("kw", MUON_KW, ids=str)
def test_muon_tracks_torch_in_bfloat16(kw):
    ours, theirs, init = _pair(MATRICES)
    opt = descent.Muon(ours, **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items()})
    ref = torch.optim.Muon(theirs, **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(30):
        _feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    assert _travel_ratio(ours, theirs, init) <= 0.03
    compare_state(opt, ref, 0.03)


def _ns_reference(x: torch.Tensor, steps=5, coeffs=(3.4445, -4.7750, 2.0315), eps=1e-7):
    """Newton–Schulz from the formula, one float32 matrix at a time."""
    a, b, c = coeffs
    tall = x.shape[0] > x.shape[1]
    X = x.T if tall else x
    X = X / max(float(torch.linalg.norm(X)), eps)
    for _ in range(steps):
        G = X @ X.T
        X = a * X + (b * G + c * (G @ G)) @ X
    return X.T if tall else X


def test_muon_float32_newton_schulz_matches_the_formula():
    ours, _, init = _pair(MATRICES)
    ref = [x.clone() for x in init]
    bufs = [torch.zeros_like(x) for x in init]
    lr, wd, mu = 0.02, 0.1, 0.95
    opt = descent.Muon(ours, lr=lr, weight_decay=wd, momentum=mu, ns_dtype="float32")
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        for p, w, b in zip(ours, ref, bufs):
            g = torch.randn(p.shape, generator=gen)
            p.grad = g
            b.mul_(mu).add_((1 - mu) * g)
            o = _ns_reference((1 - mu) * g + mu * b)
            w.mul_(1 - lr * wd).sub_(lr * math.sqrt(max(1, w.shape[0] / w.shape[1])) * o)
        opt.step()
    assert _travel_ratio(ours, ref, init) <= 1e-5
    for p, b in zip(ours, bufs):
        assert rel_err(opt.state[p]["momentum_buffer"], b) <= 1e-6


@pytest.mark.parametrize("direction", ["torch->descent", "descent->torch"])
def test_muon_checkpoint_moves_both_ways(direction):
    ours, theirs, _ = _pair(MATRICES)
    opt, ref = descent.Muon(ours, lr=0.02), torch.optim.Muon(theirs, lr=0.02)
    gen = torch.Generator().manual_seed(3)
    for step in range(5):
        _feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    src = ref if direction == "torch->descent" else opt
    dst_cls = descent.Muon if direction == "torch->descent" else torch.optim.Muon
    params = [torch.nn.Parameter(p.detach().clone()) for p in (theirs if src is ref else ours)]
    fresh = dst_cls(params, lr=0.02)
    fresh.load_state_dict(_through_disk(src.state_dict()))
    compare_state(fresh, src, 0.0)
    for p, q in zip(params, src.param_groups[0]["params"]):
        g = torch.randn(p.shape, generator=gen)
        p.grad, q.grad = g.clone(), g.clone()
    fresh.step()
    src.step()
    for p, q in zip(params, src.param_groups[0]["params"]):
        assert rel_err(p, q) <= 0.03 * float((q - q.grad).abs().max())  # bfloat16 updates


def test_muon_refuses_what_torch_refuses():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters .* size: torch.Size\(\[3\]\)"):
        descent.Muon([torch.nn.Parameter(torch.zeros(3))])
    p = torch.nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Adjust learning rate function arbitrary is not supported"):
        descent.Muon([p], adjust_lr_fn="arbitrary")
    with pytest.raises(ValueError, match="momentum should be >= 0 but is: -0.5"):
        descent.Muon([p], momentum=-0.5)
    with pytest.raises(ValueError, match="Invalid ns_dtype: 'float16'"):
        descent.Muon([p], ns_dtype="float16")
    c = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.complex64))
    c.grad = torch.ones_like(c)
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        descent.Muon([c]).step()
    p.grad = torch.zeros(2, 3).to_sparse()
    with pytest.raises(RuntimeError, match="Muon does not support sparse gradients"):
        descent.Muon([p]).step()


def test_muon_state_edits_take_effect_as_in_torch():
    ours, theirs, init = _pair(MATRICES[:3])
    opt, ref = descent.Muon(ours, lr=0.02), torch.optim.Muon(theirs, lr=0.02)
    gen = torch.Generator().manual_seed(5)
    for step in range(6):
        if step == 3:
            for o, p in ((opt, ours[0]), (ref, theirs[0])):
                o.state[p]["momentum_buffer"] = torch.full(p.shape, 5.0)  # replaced
            for o, p in ((opt, ours[1]), (ref, theirs[1])):
                del o.state[p]  # starts afresh
        _feed(ours, theirs, step, gen, skip=False)
        opt.step()
        ref.step()
    for o, r in zip(ours, theirs):
        assert rel_err(opt.state[o]["momentum_buffer"], ref.state[r]["momentum_buffer"]) <= 1e-5
    assert _travel_ratio(ours, theirs, init) <= 0.03


def test_a_param_without_gradient_keeps_still_in_a_batch():
    ps = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(3)]
    opt = descent.Muon(ps, lr=0.1)
    ps[0].grad, ps[2].grad = torch.randn(4, 4), torch.randn(4, 4)
    before = ps[1].detach().clone()
    opt.step()
    assert torch.equal(ps[1].detach(), before) and ps[1] not in opt.state


# -- Adafactor --------------------------------------------------------------------------
ADAFACTOR_KW = [
    {},
    {"weight_decay": 0.1, "lr": 0.01},
    {"weight_decay": 0.1, "maximize": True},
    {"beta2_decay": -1.0, "d": 1.5},
    {"eps": (1e-20, 1e-2), "lr": torch.tensor(0.02)},
]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=str)
@pytest.mark.parametrize("kw", ADAFACTOR_KW, ids=str)
def test_adafactor_matches_torch(kw, dtype, tol):
    ours, theirs, _ = _pair(ADAFACTOR_SHAPES, dtype)
    opt = descent.Adafactor(ours, **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items()})
    ref = torch.optim.Adafactor(theirs, **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(200):
        _feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= tol
    compare_state(opt, ref, tol)


@pytest.mark.parametrize("direction", ["torch->descent", "descent->torch"])
def test_adafactor_checkpoint_continues_the_same_trajectory(direction):
    ours, theirs, _ = _pair(ADAFACTOR_SHAPES, torch.float64)
    opt, ref = descent.Adafactor(ours, weight_decay=0.1), torch.optim.Adafactor(theirs, weight_decay=0.1)
    gen = torch.Generator().manual_seed(4)
    for step in range(12):
        _feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    src, dst = (ref, ours) if direction == "torch->descent" else (opt, theirs)
    cls = descent.Adafactor if direction == "torch->descent" else torch.optim.Adafactor
    fresh = cls(dst, weight_decay=0.1)
    fresh.load_state_dict(_through_disk(src.state_dict()))
    keep = ref if direction == "torch->descent" else opt
    for step in range(12, 40):
        _feed(ours, theirs, step, gen)
        fresh.step()
        keep.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10


def test_adafactor_refuses_what_torch_refuses():
    p = [torch.nn.Parameter(torch.zeros(2, 3))]
    for kw, message in (
        ({"eps": (-1e-30, 1e-3)}, "epsilon1 should be >= 0 but is: -1e-30"),
        ({"d": 0.5}, "Clipping threshold d should be >= 1 but is: 0.5"),
        ({"beta2_decay": 0.8}, "beta2_decay should be <= 0 but is: 0.8"),
        ({"lr": -1.0}, "Learning rate should be >= 0 but is: -1.0"),
    ):
        with pytest.raises(ValueError, match=message):
            descent.Adafactor(p, **kw)
    c = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.complex64))
    c.grad = torch.ones_like(c)
    with pytest.raises(RuntimeError, match="Adafactor does not support complex parameters"):
        descent.Adafactor([c]).step()


def test_adafactor_is_descents_own():
    assert descent.Adafactor is not torch.optim.Adafactor
    assert issubclass(descent.Adafactor, descent.RuleOptimizer)


# -- what every descent optimizer offers ------------------------------------------------
@pytest.mark.parametrize("cls", [descent.Muon, descent.Adafactor])
def test_skip_nonfinite_leaves_everything_as_it_was(cls):
    ps = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3)]
    opt = cls(ps, skip_nonfinite=True)
    for p in ps:
        p.grad = torch.randn(4, 3)
    opt.step()
    before = [p.detach().clone() for p in ps], {k: v.clone() for k, v in opt.state[ps[0]].items()}
    ps[1].grad[0, 0] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before[0]))
    assert all(torch.equal(opt.state[ps[0]][k], v) for k, v in before[1].items())


@pytest.mark.parametrize("cls", [descent.Muon, descent.Adafactor])
def test_a_deep_copy_steps_on_its_own(cls):
    import copy

    ps = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
    opt = cls(ps, ns_dtype="float32") if cls is descent.Muon else cls(ps)
    for p in ps:
        p.grad = torch.randn(4, 3)
    opt.step()
    twin = copy.deepcopy(opt)
    qs = twin.param_groups[0]["params"]
    for p, q in zip(ps, qs):
        q.grad = p.grad.clone()
    opt.step()
    twin.step()
    assert all(torch.equal(p.detach(), q.detach()) for p, q in zip(ps, qs))
