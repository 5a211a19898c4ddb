"""``descent.step_in_backward``: params updated as their gradients arrive inside backward,
gradients freed, the numbers those of ``backward(); step()`` bit for bit."""

from __future__ import annotations

import pytest
import torch

import descent
from descent.engine.grads import LARGE, STAGE


class Net(torch.nn.Module):
    """Large matrices (stepped alone as their gradients arrive), many small params
    (staged together), a param used twice (its hook fires once, with the sum) and one
    the forward never uses (no gradient: it must not move)."""

    def __init__(self):
        super().__init__()
        width = LARGE // 300 + 7  # the big layer's weight is just over LARGE
        self.big = torch.nn.Linear(300, width)
        self.small = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(6))  # > STAGE
        self.head = torch.nn.Linear(width, 5)
        self.unused = torch.nn.Linear(3, 3)
        self.scale = torch.nn.Parameter(torch.ones(5))

    def forward(self, x):
        h = torch.tanh(self.big(x))
        for layer in self.small:
            h = torch.tanh(layer(h))
        return self.head(h) * self.scale + self.scale  # scale used twice


def test_the_net_has_a_large_param_and_more_than_a_chunk_of_small_ones():
    net = Net()
    sizes = [p.numel() for p in net.parameters()]
    assert max(sizes) >= LARGE and sum(n for n in sizes if n < LARGE) > STAGE


def _pair(dtype=torch.float32):
    torch.manual_seed(0)
    a = Net().to(dtype)
    b = Net().to(dtype)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize(
    "name,kw",
    [("AdamW", {"lr": 1e-2}), ("SGD", {"lr": 0.05, "momentum": 0.9}), ("Adagrad", {}), ("NAdam", {})],
)
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
def test_same_bits_as_backward_then_step(name, kw, flat):
    inside, outside = _pair()
    o_in = getattr(descent, name)(inside.parameters(), flat=flat, **kw)
    o_out = getattr(descent, name)(outside.parameters(), flat=flat, **kw)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (o_in, o_out)]
    handle = descent.step_in_backward(inside, o_in)
    gen = torch.Generator().manual_seed(1)
    with torch.autograd.set_detect_anomaly(False):
        for _ in range(5):
            x = torch.randn(16, 300, generator=gen)
            inside(x).pow(2).mean().backward()
            assert all(p.grad is None for p in inside.parameters())  # freed as stepped
            o_out.zero_grad()
            outside(x).pow(2).mean().backward()
            o_out.step()
            for s in schedulers:
                s.step()
    for a, b in zip(inside.parameters(), outside.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(inside.unused.weight, _pair()[0].unused.weight)  # never had a gradient
    sa, sb = o_in.state_dict(), o_out.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for k, st in sb["state"].items():
        for key, v in st.items():
            assert torch.equal(sa["state"][k][key], v), (k, key)
    handle.remove()  # back to the ordinary loop
    o_in.zero_grad()
    inside(x).sum().backward()
    o_in.step()


@pytest.mark.parametrize("state_dtype", ["8bit", "bfloat16"])
def test_same_bits_as_backward_then_step_with_compact_state(state_dtype):
    """State kept in a format: each param stepped as its gradient arrives gives the bits of
    the step over the whole bucket (8-bit blocks start at each param; stochastic rounding
    hashes each element's place in the bucket, wherever the call starts)."""
    inside, outside = _pair()
    kw = {"lr": 1e-2, "state_dtype": state_dtype}
    o_in, o_out = descent.AdamW(inside.parameters(), **kw), descent.AdamW(outside.parameters(), **kw)
    descent.step_in_backward(inside, o_in)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(16, 300, generator=gen)
        inside(x).pow(2).mean().backward()
        o_out.zero_grad()
        outside(x).pow(2).mean().backward()
        o_out.step()
    for a, b in zip(inside.parameters(), outside.parameters()):
        assert torch.equal(a, b)
    sa, sb = o_in.state_dict(), o_out.state_dict()
    for k, st in sb["state"].items():
        for key, v in st.items():
            assert torch.equal(sa["state"][k][key], v), (k, key)
    assert any(v.dtype in (torch.uint8, torch.bfloat16) for st in sb["state"].values() for v in st.values())


def test_step_inside_backward_refuses_what_needs_every_gradient_first():
    net, _ = _pair()
    opt = descent.Adam(net.parameters())
    descent.step_in_backward(net, opt)
    net(torch.randn(2, 300)).sum().backward()
    with pytest.raises(RuntimeError, match="steps inside backward"):
        opt.step()  # e.g. GradScaler.step(opt), or a leftover call: the step already ran
    with pytest.raises(RuntimeError, match="already steps inside backward"):
        descent.step_in_backward(net, opt)
    with pytest.raises(ValueError, match="skip_nonfinite"):
        descent.step_in_backward(net, descent.Adam(net.parameters(), skip_nonfinite=True))
    with pytest.raises(TypeError, match="closure"):
        descent.step_in_backward(net, descent.LookaheadNesterov(net.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="descent optimizer"):
        descent.step_in_backward(net, torch.optim.Adam(net.parameters()))


def test_no_scheduler_warning_and_edits_between_backwards_take_effect():
    import warnings

    inside, outside = _pair(torch.float64)
    o_in, o_out = descent.Adam(inside.parameters(), lr=0.01), torch.optim.Adam(outside.parameters(), lr=0.01)
    descent.step_in_backward(inside, o_in)
    sched = torch.optim.lr_scheduler.ExponentialLR(o_in, 0.9)
    ref_sched = torch.optim.lr_scheduler.ExponentialLR(o_out, 0.9)
    x = torch.randn(4, 300, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would raise
        for step in range(4):
            if step == 2:  # reset one param's moments between backward calls
                for o, m in ((o_in, inside), (o_out, outside)):
                    del o.state[m.head.weight]
            inside(x).pow(2).mean().backward()
            o_out.zero_grad()
            outside(x).pow(2).mean().backward()
            o_out.step()
            sched.step()
            ref_sched.step()
    for a, b in zip(inside.parameters(), outside.parameters()):
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-12


@pytest.mark.parametrize(
    "release,cache,size,returned",
    [
        ("auto", "no compiler", 1000, False),
        ("auto", "no compiler", 1100, True),
        ("auto", "failed", 1000, False),
        ("auto", "built", 1000, True),
        ("auto", "built", 10, False),
        (True, "no compiler", 1000, True),
        (False, "built", 1100, False),
    ],
)
def test_freed_gradients_go_back_to_the_os_where_it_is_worth_it(monkeypatch, release, cache, size, returned):
    """``release_memory="auto"`` pins the allocator wherever the block cache can be had
    (it spares the page faults) and keep a gradient (:data:`BLOCK_LEAST` bytes: here
    made 400, 100 float32 elements), else only when the gradients total
    :data:`RELEASE_MIN` bytes or more (here made 4,096: 1,024 float32 elements)."""
    from descent.engine import backward, native
    from descent.optim import inbackward

    pinned: list[bool] = []
    monkeypatch.setattr(backward, "return_freed_memory", lambda: pinned.append(True) or True)
    monkeypatch.setattr(backward, "keep_blocks", lambda: False)
    no_compiler = "no C++ compiler (c++)" if cache == "no compiler" else None
    monkeypatch.setattr(native, "unavailable", lambda: no_compiler)
    monkeypatch.setattr(native, "why_not", lambda: "could not build: …" if cache == "failed" else None)
    monkeypatch.setattr(inbackward, "RELEASE_MIN", 4096)
    monkeypatch.setattr(backward, "BLOCK_LEAST", 400)
    model = torch.nn.Linear(size // 10, 10, bias=False)
    handle = descent.step_in_backward(model, descent.Adam(model.parameters()), release_memory=release)
    assert pinned == ([True] if returned else [])
    handle.remove()


def test_a_release_setting_of_another_kind_is_refused_naming_it():
    model = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="release_memory must be True, False or 'auto', got 'yes'"):
        descent.step_in_backward(model, descent.Adam(model.parameters()), release_memory="yes")


def _trained(net: Net) -> list[torch.nn.Parameter]:
    """Every param the forward uses: each gets a gradient in every backward."""
    return [p for n, p in net.named_parameters() if not n.startswith("unused")]


@pytest.fixture
def prepared(monkeypatch):
    """What every attempt to step by prepared calls inside backward answered."""
    from descent.engine.engine import Engine

    seen: list[bool] = []
    original = Engine._some_again

    def spy(self, task, indices, gr):
        out = original(self, task, indices, gr)
        seen.append(out)
        return out

    monkeypatch.setattr(Engine, "_some_again", spy)
    return seen


@pytest.mark.usefixtures("bookkeeping")
@pytest.mark.compiled
@pytest.mark.parametrize(
    "name,kw,hyper",
    [
        ("Adam", {"lr": 1e-2}, ("betas", (0.8, 0.95))),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, ("momentum", 0.5)),
        ("RMSprop", {"lr": 1e-3, "centered": True}, ("alpha", 0.9)),
        ("NAdam", {"lr": 1e-2}, ("momentum_decay", 8e-3)),
    ],
)
def test_prepared_calls_inside_backward_follow_torch_optim_through_every_edit(prepared, name, kw, hyper):
    """Once every param of a bucket has stepped together, the steps inside backward run
    kernel calls prepared once; the numbers stay torch.optim's through a scheduler's lr,
    another hyperparameter, the state edited in place, a ``step`` count edited, a
    param's state dropped and a layer left without gradients. NAdam's ``mu_product``,
    a host scalar the rule advances, is written for each param as its update runs."""
    torch.manual_seed(0)
    inside, ref = Net().double(), Net().double()
    ref.load_state_dict(inside.state_dict())
    o_in = getattr(descent, name)(_trained(inside), compile=True, **kw)  # (the kernel, not eager steps)
    o_ref = getattr(torch.optim, name)(_trained(ref), **kw)
    descent.step_in_backward(inside, o_in)
    gen = torch.Generator().manual_seed(2)
    for step in range(9):
        for o, m in ((o_in, inside), (o_ref, ref)):
            if step == 2:
                o.param_groups[0]["lr"] *= 0.5
            if step == 3:
                o.param_groups[0][hyper[0]] = hyper[1]
            if step == 4:
                st = o.state[m.big.weight]
                st[next(k for k in ("exp_avg", "momentum_buffer", "square_avg") if k in st)].mul_(0.25)
            if step == 5 and "step" in o.state[m.head.weight]:
                o.state[m.head.weight]["step"] += 2
            if step == 6:
                del o.state[m.small[1].weight]
            m.small[3].requires_grad_(step != 7)  # no gradient: these params do not move
        x = torch.randn(8, 300, generator=gen, dtype=torch.float64)
        if step == 7:
            before = inside.small[3].weight.detach().clone()
        inside(x).pow(2).mean().backward()
        o_ref.zero_grad()
        ref(x).pow(2).mean().backward()
        o_ref.step()
        if step == 7:
            assert torch.equal(inside.small[3].weight, before)
        for a, b in zip(_trained(inside), _trained(ref)):
            assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-10, (step, a.shape)
    assert prepared.count(True) >= 10  # steps 2-5 at least went by prepared calls
    sa, sb = o_in.state_dict(), o_ref.state_dict()
    for k, st in sb["state"].items():
        for key, v in st.items():
            err = (sa["state"][k][key] - v).abs().max() / v.abs().max().clamp_min(1e-300)
            assert err.item() <= 1e-10, (k, key)


@pytest.mark.usefixtures("bookkeeping")
@pytest.mark.compiled
@pytest.mark.parametrize("name", ["AdamW", "NAdam"])
def test_steps_by_prepared_calls_inside_backward_give_the_ordinary_steps_bits(prepared, monkeypatch, name):
    """float32, every param with a gradient: the bits of ``backward(); step()`` (params
    and state, NAdam's ``mu_product`` included), also when the kernel is not ready at a
    step's first call (that step goes the general way, eagerly) and when a later call of
    a step must go the general way (the rest of that step does); the steps after are
    prepared again."""
    from descent.engine.engine import _GENERAL, Engine
    from descent.engine.kernels import Kernel

    inside, outside = _pair()
    o_in = getattr(descent, name)(_trained(inside), lr=1e-2, compile=True)
    o_out = getattr(descent, name)(_trained(outside), lr=1e-2, compile=True)
    descent.step_in_backward(inside, o_in)
    gen = torch.Generator().manual_seed(1)
    ready, calls = Kernel.ready, Engine._some_calls
    made: list[int] = []

    def second_general(b, *args):
        made.append(1)
        return _GENERAL if len(made) == 2 else calls(b, *args)

    def plans_forgotten():
        for b in o_in._engine.groups[0].buckets:
            b.plans.clear()

    for step in range(7):
        if step == 3:  # the kernel "still building"
            monkeypatch.setattr(Kernel, "ready", lambda self, wait=None: False)
        if step == 4:
            monkeypatch.setattr(Kernel, "ready", ready)
            monkeypatch.setattr(Engine, "_some_calls", staticmethod(second_general))
            plans_forgotten()
        x = torch.randn(16, 300, generator=gen)
        n = len(prepared)
        inside(x).pow(2).mean().backward()
        if step == 3:
            assert prepared[n:] == [False]
        if step == 4:
            assert prepared[n:] == [True, False]
            monkeypatch.setattr(Engine, "_some_calls", staticmethod(calls))
            plans_forgotten()
        o_out.zero_grad()
        outside(x).pow(2).mean().backward()
        o_out.step()
        for a, b in zip(inside.parameters(), outside.parameters()):
            assert torch.equal(a, b), step
        for k, st in o_out.state_dict()["state"].items():
            for key, v in st.items():
                assert torch.equal(o_in.state_dict()["state"][k][key], v), (step, k, key)
    assert prepared[-3:] == [True] * 3
    sa, sb = o_in.state_dict(), o_out.state_dict()
    for k, st in sb["state"].items():
        for key, v in st.items():
            assert torch.equal(sa["state"][k][key], v), (k, key)


def test_a_gradient_freed_inside_backward_gives_its_memory_to_the_next_one(monkeypatch):
    """Where freed gradients go back to the OS (``release_memory``), each waits in the
    block cache for the next gradient backward makes, which takes its memory instead of
    page-faulting new memory in; the numbers stay those of ``backward(); step()``."""
    import copy
    import gc

    from descent.engine import backward, native

    mod = native.build()
    if mod is None:
        pytest.skip(f"no C++ module here: {native.why_not()}")
    monkeypatch.setattr(backward, "return_freed_memory", lambda: True)  # (process-wide: not in tests)
    gc.collect()
    torch.manual_seed(0)
    inside = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(4)])  # 1 MiB weights
    outside = copy.deepcopy(inside)
    o_in, o_out = descent.Adam(inside.parameters(), lr=1e-2), descent.Adam(outside.parameters(), lr=1e-2)
    handle = descent.step_in_backward(inside, o_in, release_memory=True)
    before = mod.block_cache_info()
    assert before["on"] and before["cap"] >= 512 * 512 * 4
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(8, 512, generator=gen) for _ in range(4)]
    for x in xs:
        inside(x).pow(2).mean().backward()
    assert mod.block_cache_info()["hits"] - before["hits"] >= 12  # (all but the first few)
    handle.remove()
    for x in xs:
        o_out.zero_grad()
        outside(x).pow(2).mean().backward()
        o_out.step()
    for a, b in zip(inside.parameters(), outside.parameters()):
        assert torch.equal(a, b)
    assert id(handle.steps) not in backward._keep
    if not backward._keep:
        assert mod.block_cache_info()["on"] is False
