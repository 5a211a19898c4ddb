"""Fresh gradients stepped by a windows kernel: one call steps up to ``k`` windows, each
a large param read where its gradient lies or a chunk of small ones staged together.

The numbers are torch.optim's and, bit for bit, those of the same optimizer stepping
the pieces one call at a time; ``p.grad`` is never written; the calls are as few as the
plan says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import descent
from descent.engine import kernels
from descent.engine.grads import ALONE, STAGE, calls

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import compare_state, rel_err  # noqa: E402

pytestmark = pytest.mark.compiled

#: alone windows (≥ ALONE) between staged chunks of small params (several chunks: more
#: than STAGE elements of them; sizes not multiples of 16: gaps), an empty param, 0-d and
#: one-element params, and enough windows for several calls
SHAPES = (
    [(ALONE + 3,), (5,), ()]
    + [(3001,)] * 200
    + [(0,), (300, 301), (7, 9), (1,)]
    + [(130, 129), (17,)] * 12
    + [(2 * ALONE,)] * 20
)


#: against torch.optim (which computes bfloat16 in bfloat16, op by op)
TOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 5e-2}


def _pair(dtype, shapes=SHAPES):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]
    return [torch.nn.Parameter(x.clone()) for x in init], [torch.nn.Parameter(x.clone()) for x in init]


def _windows_kernel(opt):
    """Build (in this test) the windows kernels the optimizer's steps asked for."""
    asked = [k for b in opt._engine.groups[0].buckets for k in b.kernels.values() if k.spec.windows]
    assert asked, "the step never asked for a windows kernel"
    for k in asked:
        assert k.ready(True), k.spec.describe()
    return asked


@pytest.mark.parametrize(
    "name,kw,dtype",
    [
        ("SGD", {"momentum": 0.9, "lr": 0.01, "weight_decay": 0.01}, torch.float64),
        ("Adam", {"weight_decay": 0.1}, torch.float32),
        ("AdamW", {}, torch.bfloat16),  # computed in float32, rounded once, as the pieces do
    ],
)
def test_windows_step_fresh_gradients_as_torch_and_the_pieces_do(name, kw, dtype):
    ours, theirs = _pair(dtype)
    pieces, _ = _pair(dtype)
    small = sum(p.numel() for p in ours if p.numel() < ALONE)
    assert small > 2 * STAGE and sum(p.numel() >= ALONE for p in ours) > 16
    opt = getattr(descent, name)(ours, compile=True, **kw)
    one = getattr(descent, name)(pieces, compile=True, **kw)
    one._engine.windows = 0
    ref = getattr(torch.optim, name)(theirs, **kw)
    gen = torch.Generator().manual_seed(1)
    built = False
    for step in range(6):
        for i, (a, b, c) in enumerate(zip(ours, theirs, pieces)):
            if step == 3 and i % 7 == 2:  # some params without a gradient: runs split
                a.grad = b.grad = c.grad = None
                continue
            g = torch.randn(a.shape, dtype=dtype, generator=gen)
            if step % 2 and g.dim() == 2 and i % 3 == 0:  # laid out unlike its param
                g = g.t().contiguous().t()
            a.grad, b.grad, c.grad = g.clone(), g.clone(), g.clone()
        grads = [(p.grad, None if p.grad is None else p.grad.clone()) for p in ours]
        before = kernels.stats["compiled_calls"]
        opt.step()
        if built and step < 3:  # (after step 3 the params' step counts differ: runs split)
            b = opt._engine.groups[0].buckets[0]
            planned = calls(b, 0, len(b.params), opt._engine.windows, opt.chain(opt.param_groups[0]).state)
            assert kernels.stats["compiled_calls"] - before == len(planned) > 1
        ref.step()
        one.step()
        for p, (g, seen) in zip(ours, grads):  # p.grad is the tensor backward made, unwritten
            assert p.grad is g
            if g is not None:
                assert torch.equal(g, seen)
        if not built:  # the first step ran the pieces (and asked for the kernel)
            _windows_kernel(opt)
            built = True
    for a, b, c in zip(ours, theirs, pieces):
        assert torch.equal(a, c)  # bit for bit the pieces' numbers
        assert rel_err(a, b) <= TOL[dtype]
    compare_state(opt, ref, TOL[dtype])
    for a, c in zip(ours, pieces):
        for k, v in opt.state[a].items():
            assert torch.equal(v, one.state[c][k]), k


def test_a_single_piece_asks_for_no_windows_kernel():
    """One staged chunk (a small model) or one param is one call already: no windows
    kernel is asked for, none is built."""
    for shapes in ([(8, 32), (32,), (1, 32), (1,)], [(ALONE * 8,)]):
        ps, _ = _pair(torch.float32, shapes)
        opt = descent.Adam(ps)
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
        (b,) = opt._engine.groups[0].buckets
        assert not [k for k in b.kernels.values() if k.spec.windows]


def test_held_gradients_take_no_windows():
    """``zero_grad(set_to_none=False)`` keeps the gradients in one buffer: one call over
    the whole bucket, no windows."""
    ps, _ = _pair(torch.float32, [(ALONE,), (3,), (ALONE * 2,)])
    opt = descent.SGD(ps, lr=0.1)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.zero_grad(set_to_none=False)
    for p in ps:
        p.grad.fill_(1.0)
    before = kernels.stats["compiled_calls"] + kernels.stats["eager_calls"]
    opt.step()
    assert kernels.stats["compiled_calls"] + kernels.stats["eager_calls"] - before == 1


def _kernel_source(package: Path) -> str:
    """The generated C++ of an AOTInductor package (it ships its source)."""
    import zipfile

    with zipfile.ZipFile(package) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".kernel.cpp")]
        return z.read(name).decode()


def _windows_spec(k: int):
    """Momentum SGD's ``k``-window kernel spec, with its first step's numbers."""
    from descent.engine import aot
    from descent.engine.kernels import fresh_scalars, pack

    opt = descent.SGD([torch.nn.Parameter(torch.zeros(4))], lr=0.1, momentum=0.9, compile=False)
    group = opt.param_groups[0]
    chain = opt.chain(group)
    statics, names, numbers = pack(next(fresh_scalars(chain, group)))
    return aot.Spec(chain, statics, names, torch.float32, "cpu", False, None, k), numbers


def test_window_loops_run_without_barriers_and_keep_them_when_unsure(tmp_path, monkeypatch):
    """Each window's loop ends without a barrier (``omp for nowait``: the windows are
    disjoint, the parallel region's end joins the threads) when the kernel is one loop a
    window; when it is not (a rule needing a temporary between two loops), the kernel is
    built again with inductor's barriers. Either way it steps as the eager rule does."""
    from descent.engine import aot

    spec, numbers = _windows_spec(3)
    aot.build(spec, tmp_path / "k.pt2")
    source = _kernel_source(tmp_path / "k.pt2")
    assert source.count("#pragma omp for nowait") == 3 and "#pragma omp for\n" not in source

    real = aot.unsynced

    @__import__("contextlib").contextmanager
    def miscounted(windows):
        with real(windows) as loops:
            yield loops
            loops[0] += 1  # as if a window had taken two loops

    monkeypatch.setattr(aot, "unsynced", miscounted)
    aot.build(spec, tmp_path / "safe.pt2")
    source = _kernel_source(tmp_path / "safe.pt2")
    assert "nowait" not in source and source.count("#pragma omp for\n") == 3

    gen = torch.Generator().manual_seed(0)
    scal = torch.tensor(numbers, dtype=torch.float32)
    for package in ("k.pt2", "safe.pt2"):
        fn = aot.load(tmp_path / package, torch.device("cpu")).run
        sizes = (5000, 70001, 16)
        ps = [torch.randn(n, generator=gen) for n in sizes]
        gs = [torch.randn(n, generator=gen) for n in sizes]
        bufs = [torch.randn(n, generator=gen) for n in sizes]
        want = [(p.clone(), b.clone()) for p, b in zip(ps, bufs)]
        for (p, b), g in zip(want, gs):  # the rule run eagerly, window by window
            kernels.run_eager(spec.chain, spec.statics, spec.names, scal, p, g, [b])
        fn([*ps, *gs, scal, *bufs])
        for (p, b), q, c in zip(want, ps, bufs):
            assert torch.equal(q, p) and torch.equal(c, b)
