"""The default loop: ``zero_grad()`` (set_to_none) and fresh gradients every step.

The step reads each gradient where backward left it — a large one in place, small ones
staged a chunk at a time through a cache-sized buffer — never rebinds or writes
``p.grad``, and keeps no gradient-sized buffer. The numbers are torch.optim's whatever
the mix of sizes, layouts and missing gradients.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import descent
from descent.engine.grads import LARGE, STAGE

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import compare_state, rel_err  # noqa: E402

#: several staging chunks of small params (sizes not multiples of 16: gaps between them),
#: large params between them, an empty one, a 0-d one
SHAPES = [(70, 71)] * 40 + [(LARGE + 3,), (5,), ()] + [(3001,)] * 150 + [(0,), (300, 301), (7, 9)]


def _pair(dtype=torch.float64, shapes=SHAPES):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]
    return [torch.nn.Parameter(x.clone()) for x in init], [torch.nn.Parameter(x.clone()) for x in init]


def _fresh(ours, theirs, step, gen, transpose=False):
    """New gradient tensors (some params get none); ``transpose``: some laid out unlike
    their params, as a user's hand-made gradient may be."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if (step + i) % 11 == 5:
            a.grad = b.grad = None
            continue
        g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
        if transpose and g.dim() == 2 and i % 3 == 0:
            g = g.t().contiguous().t()
        a.grad, b.grad = g.clone(), g.clone()


def test_staging_spans_several_chunks_with_gaps_and_large_params_between():
    ours, _ = _pair()
    small = sum(p.numel() for p in ours if p.numel() < LARGE)
    assert small > 2 * STAGE and any(p.numel() >= LARGE for p in ours)
    assert any(p.numel() % 16 for p in ours if 0 < p.numel() < LARGE)


@pytest.mark.usefixtures("bookkeeping")
@pytest.mark.parametrize("name,kw", [("Adam", {"weight_decay": 0.1}), ("SGD", {"momentum": 0.9, "lr": 0.01}),
                                     ("Adagrad", {}), ("NAdam", {})])  # fmt: skip
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_fresh_gradients_every_step_match_torch(name, kw, compile):
    ours, theirs = _pair()
    opt = getattr(descent, name)(ours, compile=compile, **kw)
    ref = getattr(torch.optim, name)(theirs, **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        _fresh(ours, theirs, step, gen, transpose=step % 2 == 1)
        grads = [(p.grad, None if p.grad is None else (p.grad._version, p.grad.clone())) for p in ours]
        opt.step()
        ref.step()
        for p, (g, seen) in zip(ours, grads):  # p.grad is the tensor backward made, unwritten
            assert p.grad is g
            if g is not None:
                assert g._version == seen[0] and torch.equal(g, seen[1])
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
    compare_state(opt, ref, 1e-12)
    (bucket,) = opt._engine.groups[0].buckets
    assert bucket.flat and bucket.G is None  # no gradient-sized buffer beside the gradients
    assert bucket.staging.numel() <= STAGE


@pytest.mark.usefixtures("bookkeeping")
def test_held_and_fresh_gradients_mix():
    """``zero_grad(set_to_none=False)`` holds gradients in one buffer; grads assigned by
    hand to some params afterwards are read where they are, the rest from the buffer."""
    ours, theirs = _pair()
    opt, ref = descent.Adam(ours), torch.optim.Adam(theirs)
    gen = torch.Generator().manual_seed(2)
    _fresh(ours, theirs, 0, gen)
    opt.step()
    ref.step()
    for step in range(1, 5):
        opt.zero_grad(set_to_none=False)
        ref.zero_grad(set_to_none=False)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a.grad is None:
                continue
            g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
            if i % 4 == step % 4:
                a.grad, b.grad = g.clone(), g.clone()  # a fresh tensor
            else:
                a.grad.add_(g)  # accumulated into the held view
                b.grad.add_(g)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
    compare_state(opt, ref, 1e-12)


@pytest.mark.parametrize("where", [3, 150, len(SHAPES) - 2], ids=["first-chunk", "later-chunk", "last"])
def test_skip_nonfinite_sees_a_nan_in_any_staged_chunk(where):
    ours, _ = _pair(torch.float32)
    opt = descent.Adam(ours, skip_nonfinite=True)
    for p in ours:
        p.grad = torch.ones_like(p)
    opt.step()
    before = [p.detach().clone() for p in ours]
    state = {k: v.clone() for k, v in opt.state[ours[0]].items()}
    for p in ours:
        p.grad = torch.full_like(p, 0.5)
    ours[where].grad.view(-1)[-1] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(ours, before))
    assert all(torch.equal(opt.state[ours[0]][k], v) for k, v in state.items())


@pytest.mark.usefixtures("bookkeeping")
def test_a_gradient_of_another_shape_is_named_before_anything_is_written():
    ours, _ = _pair(torch.float32)
    opt = descent.SGD(ours, lr=0.1)
    for p in ours:
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in ours]
    big = next(i for i, p in enumerate(ours) if p.numel() >= LARGE and p.dim() == 2)
    ours[big].grad.set_(torch.ones(ours[big].shape[::-1]))  # same size, another shape
    with pytest.raises(RuntimeError, match=rf"param {big} of param group 0.*shape"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, before))


def test_state_lists_params_in_the_groups_order_as_torch_does():
    """The flat buffer lays short params out before long ones (so fresh gradients are
    staged in few chunks); optimizer.state and state_dict() still list the params in the
    group's order, as torch.optim's do."""
    ours, theirs = _pair(shapes=[(LARGE,), (3,), (LARGE + 5,), (7,), (2, 2)])
    opt, ref = descent.Adam(ours), torch.optim.Adam(theirs)
    for a, b in zip(ours, theirs):
        a.grad = b.grad = torch.ones_like(a)
    opt.step()
    ref.step()
    index = {id(p): i for i, p in enumerate(ours)}
    assert [index[id(p)] for p in opt.state] == list(range(len(ours)))
    assert list(opt.state_dict()["state"]) == list(ref.state_dict()["state"]) == [0, 1, 2, 3, 4]
    compare_state(opt, ref, 1e-12)


@pytest.mark.usefixtures("bookkeeping")
def test_the_step_keeps_no_gradient_alive():
    """After step() and zero_grad(), backward's gradients are freed: the step (which
    repeats its last plan when nothing changed) holds no reference to them, so a training
    step's peak memory holds one set of gradients, as with torch.optim."""
    import gc
    import weakref

    w = torch.nn.Parameter(torch.randn(300, 301))
    b = torch.nn.Parameter(torch.randn(301))
    opt = descent.Adam([w, b])
    for _ in range(3):  # the first step plans, the later ones repeat the plan
        (w.sum() + (b * b).sum()).backward()
        refs = [weakref.ref(w.grad), weakref.ref(b.grad)]
        opt.step()
        opt.zero_grad()
        gc.collect()
        assert [r() for r in refs] == [None, None]


def test_small_params_between_large_ones_are_staged_in_one_chunk():
    """A transformer's biases and norms sit between its matrices in the group's order; the
    flat buffer lays them out side by side, so fresh gradients take one kernel call per
    large param plus one for all the small ones (not one per gap), with torch's numbers."""
    from descent.engine import kernels

    shapes = [(LARGE,), (7,), (3, 5), (LARGE + 16,), (9,), (LARGE,), (2, 2)]
    ours, theirs = _pair(shapes=shapes)
    opt, ref = descent.Adam(ours, compile=True), torch.optim.Adam(theirs)
    opt._engine.windows = 0  # the pieces one by one (tests/engine/test_windows.py: in one call)
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        for a, b in zip(ours, theirs):
            a.grad = b.grad = torch.randn(a.shape, dtype=a.dtype, generator=gen)
        before = kernels.stats["compiled_calls"]
        opt.step()
        ref.step()
        assert kernels.stats["compiled_calls"] - before == 3 + 1  # three large, one chunk
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
