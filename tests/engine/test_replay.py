"""A step that repeats the last one replays its kernel calls.

When nothing a step reads has changed (the same groups, params, chains and state; every
gradient present and lying as before), the engine runs the calls the last step made,
kept ready, instead of planning them again: a small model's step is mostly that
planning. The replayed step must give the general path's bits, and every edit between
steps a torch.optim user can make must still take effect as in torch.optim.
"""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

import pytest
import torch

import descent
from descent.engine.engine import Engine
from descent.engine.grads import ALONE

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import compare_state, rel_err  # noqa: E402

pytestmark = pytest.mark.compiled

#: alone windows between staged chunks, a 0-d param and an odd-sized small one
SHAPES = [(ALONE + 3,), (5,), ()] + [(3001,)] * 12 + [(130, 129), (17,)] * 2 + [(2 * ALONE,)] * 3
TOL = {torch.float64: 1e-12, torch.float32: 1e-6}


@pytest.fixture
def replays(monkeypatch):
    """What every replay attempt answered (True: the step was replayed)."""
    seen: list[bool] = []
    original = Engine._replay

    def spy(self, tasks, state):
        out = original(self, tasks, state)
        seen.append(out)
        return out

    monkeypatch.setattr(Engine, "_replay", spy)
    return seen


def _params(dtype, shapes, n=3):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]
    return [[torch.nn.Parameter(x.clone()) for x in init] for _ in range(n)]


def _build_windows(opt):
    """Build (in this test) the windows kernels the optimizer's steps asked for."""
    for b in opt._engine.groups[0].buckets:
        for k in b.kernels.values():
            if k.spec.windows:
                assert k.ready(True), k.spec.describe()


def _edit(step, opts, sets, name, gen, dtype):
    """The same edit of every optimizer and gradient before ``step``; returns whether
    the gradients are given in place (``zero_grad(set_to_none=False)``)."""
    if step == 3:  # a scheduler's change
        for o in opts:
            o.param_groups[0]["lr"] *= 0.5
    if step == 4:  # another hyperparameter's
        for o in opts:
            g = o.param_groups[0]
            if "betas" in g:
                g["betas"] = (0.8, 0.95)
            else:
                g["momentum"] = 0.5
    if step == 5:  # state edited in place through optimizer.state
        for o, ps in zip(opts, sets):
            st = o.state[ps[3]]
            key = "exp_avg" if "exp_avg" in st else "momentum_buffer"
            st[key].mul_(0.25)
    held = step in (6, 7)
    if step == 6:
        for o in opts:
            o.zero_grad(set_to_none=False)
    for i, ps in enumerate(zip(*sets)):
        if step == 10 and i == 4:  # a param without a gradient: not a repeat (and its step
            # count differs from then on: the bucket's runs split, as its numbers may)
            for p in ps:
                p.grad = None
            continue
        g = torch.randn(ps[0].shape, dtype=dtype, generator=gen)
        for p in ps:
            if held and p.grad is not None:
                p.grad.copy_(g)
            else:
                p.grad = g.clone()
    return held


@pytest.mark.usefixtures("bookkeeping")
@pytest.mark.parametrize(
    "name,kw,dtype,windows",
    [
        ("SGD", {"momentum": 0.9, "lr": 0.01, "weight_decay": 0.01}, torch.float64, True),
        ("Adam", {"weight_decay": 0.1}, torch.float32, True),
        ("Adam", {"weight_decay": 0.1}, torch.float32, False),  # a call a piece: one, chunk
        ("NAdam", {}, torch.float64, True),  # a host scalar advanced by the rule: mu_product
    ],
)
def test_replayed_steps_give_the_planned_steps_bits_and_take_every_edit(replays, name, kw, dtype, windows):
    ours, planned, theirs = _params(dtype, SHAPES)
    opt = getattr(descent, name)(ours, compile=True, **kw)
    twin = getattr(descent, name)(planned, compile=True, **kw)
    twin._engine._replay = lambda tasks, state: False  # every step planned afresh
    ref = getattr(torch.optim, name)(theirs, **kw)
    if not windows:
        opt._engine.windows = twin._engine.windows = 0
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        held = _edit(step, (opt, twin, ref), (ours, planned, theirs), name, gen, dtype)
        grads = [(p.grad, None if p.grad is None else p.grad.clone()) for p in ours]
        opt.step()
        twin.step()
        ref.step()
        if not held:  # p.grad is still the tensor given, unwritten
            for p, (g, seen) in zip(ours, grads):
                assert p.grad is g and (g is None or torch.equal(g, seen))
        if step == 0 and windows:
            _build_windows(opt)
            _build_windows(twin)
        for a, b in zip(ours, planned):
            assert torch.equal(a, b), step
    # replayed: steps 1-5 (fresh gradients), 7 (held ones), 9 (fresh again)
    assert replays.count(True) == 7, replays
    for a, c in zip(ours, theirs):
        assert rel_err(a, c) <= TOL[dtype]
    compare_state(opt, ref, TOL[dtype])
    for a, b in zip(ours, planned):
        for k, v in opt.state[a].items():
            assert torch.equal(v, twin.state[b][k]), k


def test_a_rule_whose_flags_change_with_the_step_replays_each_layout(replays):
    """RAdam's rectification switches on after a few steps (a flag of its kernel): the
    replay makes the calls of the new layout then, with the planned path's bits."""
    shapes = [(ALONE + 5,)]
    ours, planned, theirs = _params(torch.float64, shapes)
    opt, twin = descent.RAdam(ours, compile=True), descent.RAdam(planned, compile=True)
    twin._engine._replay = lambda tasks, state: False
    ref = torch.optim.RAdam(theirs)
    gen = torch.Generator().manual_seed(2)
    for _ in range(9):
        g = torch.randn(shapes[0], dtype=torch.float64, generator=gen)
        for p in (*ours, *planned, *theirs):
            p.grad = g.clone()
        opt.step()
        twin.step()
        ref.step()
        assert torch.equal(ours[0], planned[0])
    (made,) = opt._engine.last.calls
    assert len(made) == 2  # one plan before the switch, one after, each with its kernel
    assert len({kern.spec.statics for plan in made.values() for kern, _ in plan}) == 2
    assert replays.count(True) >= 6
    assert rel_err(ours[0], theirs[0]) <= 1e-12
    compare_state(opt, ref, 1e-12)


def test_a_replayed_step_keeps_no_gradient_alive(replays):
    (ours,) = _params(torch.float32, SHAPES, n=1)
    opt = descent.Adam(ours, compile=True)
    for step in range(4):
        grads = [torch.randn(p.shape) for p in ours]
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        if step == 0:
            _build_windows(opt)
    assert replays[-1] is True
    refs = [weakref.ref(g) for g in grads]
    del grads, g
    opt.zero_grad()
    gc.collect()
    assert all(r() is None for r in refs)


@pytest.mark.usefixtures("bookkeeping")
def test_a_param_moved_or_a_gradient_of_another_shape_is_still_seen(replays):
    """What the general step checks, a replay checks too: a param whose ``.data`` was
    reassigned is stepped where it now lives; a wrong gradient is named before any write."""
    ours, theirs = _params(torch.float32, [(64, 64), (64,)], n=2)
    opt = descent.SGD(ours, lr=0.1, momentum=0.9, compile=True)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(3)

    def step():
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()

    for _ in range(4):
        step()
    assert replays[-1] is True
    new = torch.randn(64, 64, generator=gen)
    ours[0].data, theirs[0].data = new.clone(), new.clone()
    for _ in range(3):
        step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-6
    before = [p.detach().clone() for p in ours]
    ours[0].grad, ours[1].grad = torch.ones(64, 64), torch.ones(64)
    ours[1].grad.set_(torch.ones(1, 64))  # same size, another shape
    with pytest.raises(RuntimeError, match=r"param 1 of param group 0 \(shape \(64,\)\).*shape \(1, 64\)"):
        opt.step()
    for p, was in zip(ours, before):
        assert torch.equal(p, was)


def test_a_replay_that_cannot_go_on_leaves_the_host_scalars_as_they_were(replays, monkeypatch):
    """A replay finds out late that it cannot run (a kernel still building): NAdam's
    ``mu_product``, advanced for its numbers, is written only once every call is ready,
    so the general path advances it from where it was: once a step."""
    original = Engine._calls_of
    building = [3]

    def not_yet(self, task, statics, names):
        if building[0]:
            building[0] -= 1
            return None
        return original(self, task, statics, names)

    monkeypatch.setattr(Engine, "_calls_of", not_yet)
    ours, theirs = _params(torch.float64, [(ALONE + 5,), (300,)], n=2)
    opt, ref = descent.NAdam(ours, compile=True), torch.optim.NAdam(theirs)
    gen = torch.Generator().manual_seed(4)
    for _ in range(7):
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape, dtype=torch.float64, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert replays[:3] == [False] * 3 and replays[3:] == [True] * 3
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
    compare_state(opt, ref, 1e-12, cast=("mu_product",))


@pytest.mark.usefixtures("bookkeeping")
@pytest.mark.parametrize("momentum_decay", [4e-3, 0.37])
def test_a_host_scalar_advanced_by_the_rule_keeps_torch_optims_bits(replays, momentum_decay):
    """NAdam's float32 ``mu_product``, advanced in Python floats and rounded as torch's
    in-place ``mul_`` on a 0-d float32 tensor rounds it, holds torch.optim's bits at every
    step, replayed or not (a fast schedule too: its μ_t move in every bit)."""
    ours, theirs = _params(torch.float32, [(ALONE + 5,), (300,), ()], n=2)
    opt = descent.NAdam(ours, compile=True, momentum_decay=momentum_decay)
    ref = torch.optim.NAdam(theirs, momentum_decay=momentum_decay)
    gen = torch.Generator().manual_seed(5)
    for step in range(60):
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        for a, b in zip(ours, theirs):
            mine, torchs = opt.state[a]["mu_product"], ref.state[b]["mu_product"]
            assert mine.dtype == torchs.dtype == torch.float32
            assert torch.equal(mine, torchs), (step, mine.item(), torchs.item())
    assert replays.count(True) >= 50


class _Counting:
    """The C++ module, counting the prepared calls it made (``call`` answering True)."""

    def __init__(self, mod):
        self.mod, self.calls = mod, 0

    def __getattr__(self, name):
        return getattr(self.mod, name)

    def call(self, *args):
        out = self.mod.call(*args)
        self.calls += out is True
        return out


@pytest.fixture(params=["cpp", "python"])
def counting(request, monkeypatch):
    """Steps through the C++ module (every kernel loaded afresh, so that the module
    opens it and its prepared calls run: counted), then without it (None)."""
    from descent.engine import kernels, native

    if request.param == "python":
        monkeypatch.setattr(native, "module", lambda: None)
        return None
    mod = native.build()
    if mod is None:
        pytest.skip(f"no C++ module: {native.why_not()}")
    out = _Counting(mod)
    monkeypatch.setattr(native, "module", lambda: out)
    monkeypatch.setattr(kernels, "_kernels", {})
    return out


@pytest.mark.parametrize("name,kw", [("Adam", {"weight_decay": 0.1}), ("SGD", {"lr": 0.01, "momentum": 0.9})])
def test_a_step_in_grad_mode_with_gradients_that_require_grad_records_nothing(replays, counting, name, kw):
    """``optimizer.step()`` is usually called with grad mode on, and after
    ``backward(create_graph=True)`` every gradient requires grad. A step (replayed or
    planned, through the C++ module or not) must record nothing: params stay leaves, no
    buffer of descent's picks up a graph, and the numbers are torch.optim's."""
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    ours, theirs = ([torch.nn.Parameter(x.clone()) for x in init] for _ in range(2))
    opt = getattr(descent, name)(ours, compile=True, **kw)
    ref = getattr(torch.optim, name)(theirs, **kw)
    targets = [torch.randn(s, generator=gen) for s in SHAPES]
    for step in range(6):
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            loss = sum(((p - t) ** 2 * (1 + p.sin())).sum() for p, t in zip(params, targets))
            loss.backward(create_graph=True)
            assert all(p.grad.requires_grad for p in params)
            assert torch.is_grad_enabled()
            o.step()
        if step == 0:
            for b in opt._engine.groups[0].buckets:
                assert all(k.ready(True) for k in b.kernels.values() if k is not None)
        assert all(p.is_leaf and p.grad_fn is None for p in ours)
        for b in opt._engine.groups[0].buckets:
            held = [b.P, b.staging, *(v for v in vars(b).values() if isinstance(v, torch.Tensor))]
            assert not any(t is not None and t.requires_grad for t in held)
        for a, c in zip(ours, theirs):
            assert rel_err(a, c) <= 1e-6, step
    assert not any(v.requires_grad for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    compare_state(opt, ref, 1e-6)
    assert True in replays
    assert counting is None or counting.calls > 0


def test_gradients_in_the_flat_buffer_replay_with_the_planned_steps_bits(replays, counting):
    """``zero_grad(set_to_none=False)`` from the first step: backward writes into
    descent's flat gradient buffer, and the repeated steps replay their calls over it
    (no gradient to read in place, none to stage)."""
    ours, planned, theirs = _params(torch.float32, SHAPES)
    opts = [descent.Adam(ours, compile=True), descent.Adam(planned, compile=True), torch.optim.Adam(theirs)]
    opts[1]._engine._replay = lambda tasks, state: False  # every step planned afresh
    gen = torch.Generator().manual_seed(2)
    for step in range(6):
        for o in opts:
            o.zero_grad(set_to_none=False)
        for ps in zip(ours, planned, theirs):
            g = torch.randn(ps[0].shape, generator=gen)
            for p in ps:
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
        for o in opts:
            o.step()
        if step == 0:
            for o in opts[:2]:
                for b in o._engine.groups[0].buckets:
                    assert all(k.ready(True) for k in b.kernels.values() if k is not None)
        for a, b in zip(ours, planned):
            assert torch.equal(a, b), step
    b = opts[0]._engine.groups[0].buckets[0]
    assert b.G is not None and ours[0].grad.data_ptr() in b.gptrs  # (the flat buffer's)
    assert replays.count(True) >= 3, replays
    assert counting is None or counting.calls >= 3
    for a, c in zip(ours, theirs):
        assert rel_err(a, c) <= 1e-6
    compare_state(opts[0], opts[2], 1e-6)
