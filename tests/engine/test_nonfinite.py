"""Non-finite gradients: ``skip_nonfinite=True`` and torch.amp.GradScaler, against
torch.optim running the same script (it skips the same steps by not stepping)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import descent

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import DEFAULTS, case_id, rel_err  # noqa: E402

TORCH_DEFAULTS = [c for c in DEFAULTS if hasattr(torch.optim, c[0])]
BAD = {2: float("nan"), 5: float("inf"), 6: -float("inf")}  # step → value put in one grad


def _params(n_groups: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, dtype=torch.float64, generator=gen) for s in ((40,), (7, 5), (), (33,))]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]

    def groups(ps):
        return [{"params": ps}] if n_groups == 1 else [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.03}]

    return ours, theirs, groups


def _check_skipping(name, kw, n_groups, compile, some_none=False):
    ours, theirs, groups = _params(n_groups)
    opt = getattr(descent, name)(groups(ours), **kw, skip_nonfinite=True, compile=compile)
    ref = getattr(torch.optim, name)(groups(theirs), **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(9):
        grads = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in ours]
        if some_none and step % 3 == 1:
            grads[1] = None
        if step in BAD:
            grads[-1][step] = BAD[step]
        before = [p.detach().clone() for p in ours]
        before += [t.clone() for s in opt.state.values() for t in s.values()]
        for p, q, g in zip(ours, theirs, grads):
            p.grad = None if g is None else g.clone()
            q.grad = None if g is None else g.clone()
        opt.step()
        if step in BAD:  # bit for bit as it was, state and step counts included
            after = [p.detach() for p in ours] + [t for s in opt.state.values() for t in s.values()]
            assert all(torch.equal(a, b) for a, b in zip(before, after))
        else:
            ref.step()
    assert opt.skipped_steps == len(BAD)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
        for k, v in ref.state[b].items():
            assert rel_err(opt.state[a][k], v) <= 1e-12, k


@pytest.mark.parametrize("case", TORCH_DEFAULTS, ids=case_id)
@pytest.mark.parametrize("n_groups", [1, 2])
def test_skip_nonfinite_leaves_everything_as_it_was_and_matches_torch(case, n_groups):
    name, kw = case
    _check_skipping(name, kw, n_groups, compile=False, some_none=n_groups == 2)


@pytest.mark.parametrize("name, kw", [("Adam", {"amsgrad": True}), ("NAdam", {})])
def test_skip_nonfinite_inside_the_compiled_kernel(name, kw):
    from descent.engine import kernels

    kernels.reset()
    _check_skipping(name, kw, n_groups=1, compile=True)
    assert kernels.stats["compiled_calls"] > 0 and kernels.stats["eager_calls"] == 0


def test_skip_nonfinite_is_off_by_default_and_checked():
    p = torch.nn.Parameter(torch.zeros(20))
    opt = descent.Adam([p])
    p.grad = torch.full((20,), float("nan"))
    opt.step()
    assert p.isnan().all() and opt.skipped_steps == 0  # as torch.optim: it reaches the param
    with pytest.raises(TypeError, match="skip_nonfinite"):
        descent.Adam([p], skip_nonfinite="yes")


def test_lion_skips_nonfinite_steps_too():
    p = torch.nn.Parameter(torch.ones(32))
    opt = descent.Lion([p], lr=0.1, skip_nonfinite=True)
    p.grad = torch.ones(32)
    p.grad[4] = float("nan")
    opt.step()
    assert torch.equal(p.detach(), torch.ones(32)) and opt.skipped_steps == 1
    p.grad = torch.ones(32)
    opt.step()
    assert torch.equal(p.detach(), torch.full((32,), 0.9))


# -- torch.amp.GradScaler ---------------------------------------------------------------
def _scaled_run(make_opt, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 2))
    opt = make_opt(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=3)
    gen = torch.Generator().manual_seed(seed + 1)
    record = []
    for step in range(10):
        x = torch.randn(16, 6, generator=gen)
        opt.zero_grad()
        scaler.scale(model(x).pow(2).mean()).backward()
        if step in (3, 7):
            model[0].weight.grad[1, 2] = float("inf") if step == 3 else float("nan")
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        unchanged = all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
        record.append((unchanged, scaler.get_scale()))
    return model, opt, record


@pytest.mark.parametrize("case", TORCH_DEFAULTS, ids=case_id)
def test_grad_scaler_skips_inf_steps_and_matches_torch(case):
    name, kw = case
    model, opt, rec = _scaled_run(lambda ps: getattr(descent, name)(ps, **kw))
    ref_model, ref, ref_rec = _scaled_run(lambda ps: getattr(torch.optim, name)(ps, **kw))
    assert rec == ref_rec  # same skipped steps, same scale schedule
    assert rec[3][0] and rec[7][0] and not rec[4][0]
    assert rec[3][1] < rec[2][1]  # the scale backed off
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert rel_err(a, b) <= 1e-5
        for k, v in ref.state[b].items():
            assert rel_err(opt.state[a][k], v) <= 1e-5, k
        if "step" in ref.state[b]:  # SGD keeps none
            assert float(opt.state[a]["step"]) == float(ref.state[b]["step"]) == 8
