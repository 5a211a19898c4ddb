"""torch.optim compatibility: schedulers, hooks, closures, checkpoints both ways,
param groups added later, layouts and dtypes."""

from __future__ import annotations

import io

import pytest
import torch
from optim_cases import CASES, case_id, feed, make_pair, rel_err
from torch.optim import lr_scheduler as S

import descent


def _schedulers(opt):
    return {
        "StepLR": lambda: S.StepLR(opt, 7, gamma=0.5),
        "MultiStepLR": lambda: S.MultiStepLR(opt, [5, 15], gamma=0.3),
        "ExponentialLR": lambda: S.ExponentialLR(opt, 0.95),
        "CosineAnnealingLR": lambda: S.CosineAnnealingLR(opt, 20),
        "CosineAnnealingWarmRestarts": lambda: S.CosineAnnealingWarmRestarts(opt, 6),
        "LinearLR": lambda: S.LinearLR(opt, 0.1, 1.0, 10),
        "ConstantLR": lambda: S.ConstantLR(opt, 0.5, 5),
        "PolynomialLR": lambda: S.PolynomialLR(opt, 25, 2.0),
        "LambdaLR": lambda: S.LambdaLR(opt, lambda e: 1 / (1 + e)),
        "MultiplicativeLR": lambda: S.MultiplicativeLR(opt, lambda e: 0.97),
        "SequentialLR": lambda: S.SequentialLR(
            opt, [S.LinearLR(opt, 0.1, 1.0, 5), S.ExponentialLR(opt, 0.9)], milestones=[5]
        ),
        "ChainedScheduler": lambda: S.ChainedScheduler([S.ExponentialLR(opt, 0.9), S.StepLR(opt, 4)]),
        "OneCycleLR": lambda: S.OneCycleLR(opt, max_lr=0.05, total_steps=30),
        "CyclicLR": lambda: S.CyclicLR(opt, 0.001, 0.05, step_size_up=4),
        "ReduceLROnPlateau": lambda: S.ReduceLROnPlateau(opt, patience=1, factor=0.5),
    }


SCHEDULED = [("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adam", {"lr": 0.01}), ("NAdam", {"lr": 0.01})]


@pytest.mark.parametrize("case", SCHEDULED, ids=case_id)
@pytest.mark.parametrize("sched", list(_schedulers(None)))
def test_every_scheduler_drives_the_same_trajectory(case, sched):
    name, kw = case
    if sched == "CyclicLR" and name != "SGD":
        kw = {**kw, "betas": (0.9, 0.999)}
    ours, theirs, opt, ref = make_pair(name, kw)
    s_ours, s_ref = _schedulers(opt)[sched](), _schedulers(ref)[sched]()
    gen = torch.Generator().manual_seed(3)
    for step in range(30):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
        if sched == "ReduceLROnPlateau":
            metric = float(step % 4)
            s_ours.step(metric)
            s_ref.step(metric)
        else:
            s_ours.step()
            s_ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10
    for g_ours, g_ref in zip(opt.param_groups, ref.param_groups):
        assert g_ours["lr"] == pytest.approx(g_ref["lr"], rel=1e-12)
        for key in ("momentum", "betas"):
            if key in g_ref:
                assert g_ours[key] == pytest.approx(g_ref[key])


def _through_disk(state_dict):
    """A checkpoint as users make one (in-process, torch.optim itself aliases tensors)."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("direction", ["torch->descent", "descent->torch"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_checkpoint_continues_the_same_trajectory(case, direction):
    name, kw = case
    ours, theirs, opt, ref = make_pair(name, kw)
    gen = torch.Generator().manual_seed(4)
    for step in range(12):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    # Swap: each optimizer continues from the other's checkpoint on the other's params.
    src, dst_params = (ref, ours) if direction == "torch->descent" else (opt, theirs)
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
    fresh_cls = getattr(descent if direction == "torch->descent" else torch.optim, name)
    fresh = fresh_cls([{"params": dst_params[:3]}, {"params": dst_params[3:], "lr": 0.03}], **kw)
    fresh.load_state_dict(_through_disk(src.state_dict()))
    keep = ref if direction == "torch->descent" else opt
    for step in range(12, 40):
        feed(ours, theirs, step, gen)
        fresh.step()
        keep.step()
    # torch.optim.load_state_dict casts NAdam's float32 mu_product to the param dtype
    # (only "step" is exempt), so a torch optimizer resumed from any checkpoint runs the
    # product in float64 from then on (torch resuming its own checkpoint drifts the same).
    tol = 1e-8 if name == "NAdam" and direction == "descent->torch" else 1e-10
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= tol


def test_hooks_and_closure():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = descent.Adam([p], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        calls.append("closure")
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "closure", "post"]
    assert loss.item() == pytest.approx(5.0)
    assert p.detach().tolist() == pytest.approx([0.9, -1.9])


def test_global_hooks_profiler_ranges_and_hook_removal():
    """The step skips torch's hook wrapper only when nothing would see it: global hooks
    run, the profiler records torch's range name, and a removed hook stops running."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = descent.SGD([p], lr=0.1)
    calls = []
    handle = register_optimizer_step_post_hook(lambda o, a, k: calls.append(type(o).__name__))
    opt.step()
    handle.remove()
    local = opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.step()
    local.remove()
    opt.step()
    assert calls == ["SGD", "pre"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        opt.step()
    assert "Optimizer.step#SGD.step" in {e.name for e in prof.events()}
    assert p.detach().tolist() == pytest.approx([0.6] * 3)


def test_a_subclass_step_runs_each_hook_once():
    class Logged(descent.SGD):
        def step(self, closure=None):
            calls.append("step")
            return super().step(closure)

    calls = []
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    opt = Logged([p], lr=0.5)
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.step()
    assert calls == ["pre", "step", "post"]
    assert p.detach().tolist() == [0.5, 0.5]


def test_param_group_added_after_steps_began():
    a0, b0 = torch.randn(4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ours = [torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())]
    theirs = [torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())]
    opt, ref = descent.Adam([ours[0]], lr=0.01), torch.optim.Adam([theirs[0]], lr=0.01)
    gen = torch.Generator().manual_seed(5)
    for step in range(20):
        if step == 8:
            opt.add_param_group({"params": [ours[1]], "lr": 0.05})
            ref.add_param_group({"params": [theirs[1]], "lr": 0.05})
        n = 1 if step < 8 else 2
        feed(ours[:n], theirs[:n], step, gen)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
    assert opt.state[ours[1]]["step"].item() == ref.state[theirs[1]]["step"].item()


def test_requires_grad_changes_mid_training():
    torch.manual_seed(0)
    m1, m2 = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
    m2.load_state_dict(m1.state_dict())
    opt, ref = descent.AdamW(m1.parameters(), lr=0.01), torch.optim.AdamW(m2.parameters(), lr=0.01)
    x = torch.randn(16, 4, dtype=torch.float64)
    for step in range(20):
        for m in (m1, m2):
            m.bias.requires_grad_(not 5 <= step < 12)
        for m, o in ((m1, opt), (m2, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-12


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_and_unused_params_match_torch(set_to_none):
    torch.manual_seed(0)
    m1 = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)]).double()
    m2 = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)]).double()
    m2.load_state_dict(m1.state_dict())
    opt, ref = descent.Adam(m1.parameters(), lr=0.01), torch.optim.Adam(m2.parameters(), lr=0.01)
    x = torch.randn(8, 3, dtype=torch.float64)
    for step in range(15):
        use = step % 3  # the second layer is skipped every third step
        for m, o in ((m1, opt), (m2, ref)):
            o.zero_grad(set_to_none=set_to_none)
            y = m[0](x)
            if use:
                y = m[1](y)
            y.pow(2).mean().backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-12
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert opt.state[a]["step"].item() == ref.state[b]["step"].item()


def test_layouts_noncontiguous_channels_last_scalar_empty():
    torch.manual_seed(0)
    shapes = [torch.randn(5, 4).t(), torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)]
    shapes += [torch.tensor(1.5), torch.empty(0, 3), torch.randn(3, 4)[:, 1]]
    ours = [torch.nn.Parameter(t.clone(memory_format=torch.preserve_format).double()) for t in shapes]
    theirs = [torch.nn.Parameter(t.clone(memory_format=torch.preserve_format).double()) for t in shapes]
    strides = [p.stride() for p in ours]
    opt, ref = (
        descent.RMSprop(ours, lr=0.01, momentum=0.5),
        torch.optim.RMSprop(theirs, lr=0.01, momentum=0.5),
    )
    gen = torch.Generator().manual_seed(6)
    for step in range(25):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    for a, b, st in zip(ours, theirs, strides):
        assert rel_err(a, b) <= 1e-12
        assert a.stride() == st  # the layout the user chose survives flat storage


def test_module_state_dict_is_unchanged_by_flat_storage():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    opt = descent.SGD(model.parameters(), lr=0.0)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k])
    assert [p for p in model.parameters()] == params  # same Parameter objects


def test_grad_scaler_on_cpu_matches_torch():
    torch.manual_seed(0)
    m1, m2 = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    m2.load_state_dict(m1.state_dict())
    opt, ref = descent.Adam(m1.parameters(), lr=0.01), torch.optim.Adam(m2.parameters(), lr=0.01)
    s1, s2 = torch.amp.GradScaler("cpu", init_scale=1024.0), torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(8, 4)
    for _ in range(10):
        for m, o, s in ((m1, opt, s1), (m2, ref, s2)):
            o.zero_grad()
            s.scale(m(x).pow(2).mean()).backward()
            s.step(o)
            s.update()
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert rel_err(a, b) <= 1e-6


def test_drop_in_module_swap():
    import torch.optim as reference

    for name in ("lr_scheduler", "swa_utils", "Optimizer", "LBFGS", "Rprop", "ASGD", "SparseAdam"):
        assert getattr(descent, name) is getattr(reference, name)
    with pytest.raises(AttributeError):
        descent.NoSuchOptimizer  # noqa: B018
