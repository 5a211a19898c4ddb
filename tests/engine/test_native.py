"""The step's per-gradient bookkeeping in C++ (``descent.engine.native``).

Each function answers only the common case, and anything else is handed back to the
Python path (None or False) before it writes: so each is checked here against what the
Python path and torch define (the gradient objects, a 1-D window over a tensor's memory,
a copy), on the cases it must refuse too; and a step through it gives the bits of a step
without it, and torch.optim's numbers.
"""

from __future__ import annotations

import collections
import functools
import sys
from pathlib import Path

import pytest
import torch

import descent
from descent.engine import native
from descent.engine.grads import ALONE, LARGE

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import compare_state, rel_err  # noqa: E402


@pytest.fixture(scope="module")
def fast():
    mod = native.build()
    if mod is None:
        if native.unavailable():
            pytest.skip(native.unavailable())
        pytest.fail(f"the C++ bookkeeping did not build: {native.why_not()}")
    return mod


def _params(*shapes, dtype=torch.float32):
    ps = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


def test_grads_are_the_gradient_objects_when_every_one_is_as_expected(fast):
    ps = _params((3, 4), (5,), ())
    got = fast.grads(ps, torch.float32, -1, [p.shape for p in ps])
    assert len(got) == 3 and all(g is p.grad for g, p in zip(got, ps))


@pytest.mark.parametrize("case", ["missing", "dtype", "device", "shape", "sparse", "conj", "not-a-tensor"])
def test_grads_answer_none_for_anything_else(fast, case):
    ps = _params((3, 4), (5,))
    dtype, device, shapes = torch.float32, -1, [p.shape for p in ps]
    if case == "missing":
        ps[1].grad = None
    elif case == "dtype":
        dtype = torch.float64
    elif case == "device":
        device = 0
    elif case == "shape":
        shapes[0] = torch.Size((4, 3))
    elif case == "sparse":
        ps[0].grad = torch.randn(3, 4).to_sparse()
    elif case == "conj":
        ps = _params((3,), dtype=torch.complex64)
        ps[0].grad = torch.randn(3, dtype=torch.complex64).conj()
        dtype, shapes = torch.complex64, [ps[0].shape]
    elif case == "not-a-tensor":
        ps = [*ps, 3.0]
        shapes.append(torch.Size(()))
    assert fast.grads(ps, dtype, device, shapes) is None


def test_grads_refuse_lists_of_another_length_loudly(fast):
    ps = _params((3,))
    with pytest.raises(TypeError, match="equal length"):
        fast.grads(ps, torch.float32, -1, [])


def _memory_order(g: torch.Tensor) -> torch.Tensor:
    """The 1-D window over ``g``'s memory, by torch's own as_strided."""
    return g.as_strided((g.numel(),), (1,), g.storage_offset())


def test_flat_puts_1d_windows_over_the_gradients_memory_in_their_slots(fast):
    ps = _params((6, 7), (4, 5))
    ps.append(torch.nn.Parameter(torch.randn(5, 3).t()))  # a param laid out transposed …
    ps[2].grad = torch.randn(5, 3).t()  # … and its gradient laid out as it is
    base = torch.randn(40)
    ps[1].grad = base[10:30].view(4, 5)  # a view into a larger buffer
    args = ["p0", "p1", None, None, None, "x"]
    assert fast.flat(args, [(2, 0), (3, 1), (4, 2)], [p.grad for p in ps], ps) is True
    assert args[:2] == ["p0", "p1"] and args[5] == "x"
    for w, p in zip(args[2:5], ps):
        assert w.dim() == 1 and w.numel() == p.numel()
        assert w.data_ptr() == p.grad.data_ptr() and torch.equal(w, _memory_order(p.grad))
    assert torch.equal(args[3], base[10:30])
    args[3].add_(1.0)  # a window, not a copy
    assert torch.equal(base[10:30], ps[1].grad.reshape(-1))


@pytest.mark.parametrize("case", ["layout", "missing", "sparse"])
def test_flat_answers_false_for_a_gradient_laid_out_otherwise(fast, case):
    ps = _params((6, 7))
    if case == "layout":  # a contiguous param, a transposed gradient: memory orders differ
        ps[0].grad = torch.randn(7, 6).t()
    elif case == "sparse":
        ps[0].grad = torch.randn(6, 7).to_sparse()
    grads = [None] if case == "missing" else [ps[0].grad]
    args = [None, None]
    assert fast.flat(args, [(1, 0)], grads, ps) is False


def test_stage_copies_small_gradients_and_zeroes_the_gaps(fast):
    ps = _params((3, 4), (5,), (2, 2))
    staging = torch.full((40,), 7.0)
    views = [staging[0:12].view(3, 4), staging[16:21], staging[24:28].view(2, 2)]
    gaps = [staging[12:16], staging[21:24]]
    assert fast.stage(views, [0, 1, 2], [p.grad for p in ps], gaps) is True
    want = torch.cat(
        [ps[0].grad.reshape(-1), torch.zeros(4), ps[1].grad, torch.zeros(3), ps[2].grad.reshape(-1)]
    )
    assert torch.equal(staging[:28], want)
    assert torch.equal(staging[28:], torch.full((12,), 7.0))  # nothing else written


@pytest.mark.parametrize("case", ["dtype", "layout", "sparse", "shape"])
def test_stage_refuses_before_writing_anything(fast, case):
    ps = _params((3, 4), (5,))
    staging = torch.full((20,), 7.0)
    views = [staging[0:12].view(3, 4), staging[12:17]]
    grads = [p.grad for p in ps]
    if case == "dtype":
        grads[1] = grads[1].double()
    elif case == "layout":
        grads[0] = torch.randn(4, 3).t()
    elif case == "sparse":
        grads[1] = grads[1].to_sparse()
    elif case == "shape":
        grads[0] = torch.randn(4, 3)
    assert fast.stage(views, [0, 1], grads, [staging[17:20]]) is False
    assert torch.equal(staging, torch.full((20,), 7.0))


def _runner(mod, pt2):
    """The kernel at ``pt2`` as a function of its arguments, run through the module."""
    handle = native.kernel_handle(pt2)
    return None if handle is None else functools.partial(mod.run, handle)


class _Declining:
    """The module, with function ``name`` answering False (its Python path runs)."""

    def __init__(self, mod, name):
        self.mod = mod
        self.name = name

    def __getattr__(self, name):
        return (lambda *args: False) if name == self.name else getattr(self.mod, name)


class _Spy:
    """The module, counting what each function answered."""

    def __init__(self, mod):
        self.mod = mod
        self.seen: dict[str, list] = collections.defaultdict(list)

    def __getattr__(self, name):
        fn = getattr(self.mod, name)

        def spied(*args):
            out = fn(*args)
            self.seen[name].append(out is not None and out is not False)
            return out

        return spied


#: large params read in place, small ones staged (with gaps), a 0-d one, one laid out
#: transposed
SHAPES = [(ALONE + 3,), (5,), ()] + [(301,)] * 20 + [(130, 129), (17,)] * 2 + [(LARGE + 1,), (40, 30)]


@pytest.mark.compiled
@pytest.mark.parametrize("name,kw", [("Adam", {"weight_decay": 0.1}), ("SGD", {"momentum": 0.9, "lr": 0.01})])
def test_a_step_through_it_gives_the_python_paths_bits_and_torch_optims_numbers(fast, monkeypatch, name, kw):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    ours, twin, third, theirs = ([torch.nn.Parameter(x.clone()) for x in init] for _ in range(4))
    spy = _Spy(fast)
    apart = _Spy(_Declining(fast, "call"))  # (staging and windows as calls of their own)
    opt = getattr(descent, name)(ours, compile=True, **kw)
    python = getattr(descent, name)(twin, compile=True, **kw)
    separate = getattr(descent, name)(third, compile=True, **kw)
    ref = getattr(torch.optim, name)(theirs, **kw)
    for step in range(8):
        for i, ps in enumerate(zip(ours, twin, third, theirs)):
            g = torch.randn(ps[0].shape, generator=gen)
            if step == 5 and i == 4:  # one missing gradient: the Python path names the rest
                g = None
            for p in ps:
                p.grad = None if g is None else g.clone()
        monkeypatch.setattr(native, "module", lambda: spy)
        opt.step()
        monkeypatch.setattr(native, "module", lambda: apart)
        separate.step()
        monkeypatch.setattr(native, "module", lambda: None)
        python.step()
        ref.step()
        for a, b, c in zip(ours, twin, third):
            assert torch.equal(a, b) and torch.equal(a, c), step
        if step == 0:  # the kernels a repeated step asks for without waiting: built now
            for o in (opt, python, separate):
                for b in o._engine.groups[0].buckets:
                    assert all(k.ready(True) for k in b.kernels.values() if k is not None)
    for a, c in zip(ours, theirs):
        assert rel_err(a, c) <= 1e-6
    compare_state(opt, ref, 1e-6)
    # the repeated steps looked at in one C++ call, the others' gradients gathered there;
    # the step with a missing gradient handed back to Python; windows and staging in C++
    assert spy.seen["again"].count(True) >= 4 and True in spy.seen["grads"]
    assert False in spy.seen["again"] + spy.seen["grads"]
    # each kernel call with its staging and windows in one C++ call, or in calls of
    # their own
    assert True in spy.seen["call"] and True in spy.seen["pack"]
    assert True in apart.seen["flat"] and True in apart.seen["stage"]


@pytest.mark.compiled
def test_a_prepared_call_refuses_before_writing_anything(fast):
    """``call`` (staging, windows and the kernel run in one): a gradient laid out
    otherwise than its param answers False with nothing written (the Python path makes
    the call then); a wrong count of arguments, a hole no slot fills or a position out of
    range raise, naming it; the thread count is what it was after a call on one thread."""
    shapes = [(LARGE + 1,), (40, 30), (301,), (5,)]
    params = _params(*shapes)
    opt = descent.Adam(params, compile=True)
    opt.step()
    for b in opt._engine.groups[0].buckets:
        assert all(k.ready(True) for k in b.kernels.values() if k is not None)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # (a repeated step: its calls are prepared)
    e = opt._engine
    task = e.last.tasks[0]
    b = task.b
    kern, call = next(iter(e.last.calls[0].values()))[0]
    assert kern.handle is not None and call.slots and call.views  # (read in place, and staged)
    grads = [torch.randn_like(p) for p in b.params]  # (in the bucket's order)
    scal = b.numbers.tensor
    before = [p.detach().clone() for p in params]
    staging = [v.clone() for v in call.views]
    staged = call.views, call.staged, call.gaps

    def make(args=call.args, pos=call.scal, slots=call.slots, gs=grads, single=True):
        return fast.call(kern.handle, args, pos, scal, slots, gs, b.params, *staged, single)

    i = next(i for _, i in call.slots)
    other = list(grads)
    other[i] = torch.randn(2 * b.params[i].numel())[::2].view(b.params[i].shape)  # (every other element)
    assert make(gs=other) is False
    other[i] = grads[i]
    k = call.staged[0]
    other[k] = torch.randn(b.params[k].shape, dtype=torch.float64)  # (a dtype it cannot stage)
    assert make(gs=other) is False
    with pytest.raises(TypeError, match=r"the kernel takes \d+ tensors, not"):
        make(args=call.args[:-1])
    with pytest.raises(TypeError, match="is None and no slot fills it"):
        make(slots=[])
    with pytest.raises(IndexError, match="the numbers' position is out of range"):
        make(pos=len(call.args))
    with pytest.raises(IndexError, match="a slot out of range"):
        make(slots=[(0, len(params))])
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert all(torch.equal(v, w) for v, w in zip(call.views, staging))
    threads = torch.get_num_threads()
    assert make(single=True) is True
    assert torch.get_num_threads() == threads
    assert not all(torch.equal(p, q) for p, q in zip(params, before))
    for k, q in zip(call.staged, call.views):  # (the small gradients were staged)
        assert torch.equal(q, grads[k])


def test_turned_off_it_is_neither_built_nor_used(monkeypatch, tmp_path):
    import subprocess

    env = {"DESCENT_CACHE_DIR": str(tmp_path), "DESCENT_NATIVE": "0", "DESCENT_BUILD": "1"}
    code = (
        "import torch, descent\n"
        "from descent.engine import native\n"
        "p = torch.nn.Parameter(torch.randn(3)); p.grad = torch.randn(3)\n"
        "descent.SGD([p], lr=0.1).step()\n"
        "print(native.module(), native.why_not())\n"
    )
    import os

    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None turned off (DESCENT_NATIVE=0)"
    assert not list(tmp_path.rglob("native-*"))


@pytest.mark.parametrize("case", ["as-expected", "moved", "host-edited", "shared-buffer", "missing"])
def test_again_answers_the_gradients_only_when_nothing_a_repeated_step_reads_changed(fast, case):
    ps = _params((3, 4), (5,))
    ptrs = [p.data_ptr() for p in ps]
    hosts = [torch.zeros(2), torch.ones(2)]
    seen = [h._version for h in hosts]
    shapes = [p.shape for p in ps]
    if case == "moved":  # a param's .data assigned: it left the flat buffer
        ps[1].data = torch.randn(5)
    elif case == "host-edited":  # optimizer.state[p]["step"] += 1 on a view of a host buffer
        hosts[0][1:] += 1
    elif case == "shared-buffer":  # the first gradient a window of a larger buffer (DDP's)
        ps[0].grad = torch.randn(40)[4:16].view(3, 4)
    elif case == "missing":
        ps[1].grad = None
    got = fast.again(ps, ptrs, hosts, seen, torch.float32, -1, shapes)
    if case == "as-expected":
        assert [g is p.grad for g, p in zip(got, ps)] == [True, True]
    else:
        assert got is None


def test_a_compiler_that_cannot_run_is_recorded_once_and_the_steps_go_on(tmp_path):
    """The background build's process cannot start (no shell): the reason is recorded in
    the cache, the steps run the Python way, and nothing is tried again."""
    import os
    import subprocess

    code = (
        "import subprocess, time, torch, descent\n"
        "from descent.engine import native\n"
        "def boom(*a, **k): raise FileNotFoundError('no shell here')\n"
        "subprocess.run = boom\n"
        "p = torch.nn.Parameter(torch.randn(3)); p.grad = torch.randn(3)\n"
        "o = descent.SGD([p], lr=0.1)\n"
        "for _ in range(3):\n"
        "    o.step(); time.sleep(0.3)\n"
        "native._next_look = 0.0\n"
        "print(native.module(), native.why_not().splitlines()[1])\n"
    )
    env = {**os.environ, "DESCENT_CACHE_DIR": str(tmp_path), "DESCENT_BUILD": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None the C++ compiler could not run: no shell here", out.stdout
    assert len(list(tmp_path.rglob("native-*.failed"))) == 1 and not list(tmp_path.rglob("native-*.so"))


# -- a kernel's library called through the module ----------------------------------------
@pytest.mark.compiled
@pytest.mark.parametrize(
    "name,kw,shapes",
    [
        ("Adam", {"weight_decay": 0.1}, SHAPES),  # windows kernels: several tensors a call
        ("NAdam", {"skip_nonfinite": True}, [(3000,)]),  # a guarded kernel: it returns a flag
        ("AdamW", {"state_dtype": torch.bfloat16}, [(LARGE + 1,), (300,)]),  # a stored format
    ],
)
def test_a_kernel_run_through_its_library_gives_torchs_runners_bits(fast, monkeypatch, name, kw, shapes):
    """Every kernel call a step makes, made again on copies of its arguments through the
    module (``native.kernel_handle``) and through torch's AOTInductor runner: the same bits in
    every argument written and the same outputs (a guarded kernel's flag, inf and not)."""
    from descent.engine import aot, engine, kernels

    # (every call through engine._call, to be recorded: the one-call path answers False)
    python_calls = _Declining(fast, "call")
    monkeypatch.setattr(native, "module", lambda: python_calls)
    made: list[tuple] = []
    original = engine._call

    def record(fn, args, n, cpu):
        made.append((fn, [a.clone() for a in args]))
        return original(fn, args, n, cpu)

    monkeypatch.setattr(engine, "_call", record)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = getattr(descent, name)(params, compile=True, **kw)
    gen = torch.Generator().manual_seed(3)
    for step in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
            if step == 2 and kw.get("skip_nonfinite"):
                p.grad.view(-1)[0] = float("inf")
        opt.step()
    known = {}
    for b in opt._engine.groups[0].buckets:
        for kern in b.kernels.values():
            if kern is not None and kern.fn is not None:
                known[id(kern.fn)] = kern
    assert made and all(id(fn) in known for fn, _ in made)
    flags = []
    for fn, args in made:
        kern = known[id(fn)]
        pt2 = aot.paths(kern.key)[0]
        direct, theirs = _runner(fast, pt2), aot.load(pt2, torch.device("cpu"))
        assert direct is not None
        a, b = [x.clone() for x in args], [x.clone() for x in args]
        out_a, out_b = direct(a), theirs.run(b)
        for x, y in zip(a, b):
            assert torch.equal(x, y), kern.spec.describe()
        out_b = [o for o in out_b if o is not None]
        assert (out_a is None) == (not out_b)
        if out_a is not None:
            assert len(out_a) == len(out_b) and all(torch.equal(x, y) for x, y in zip(out_a, out_b))
            flags.append(bool(out_a[0]))
    if kw.get("skip_nonfinite"):
        assert True in flags and False in flags  # (the inf step was skipped in the kernel)
    assert kernels.stats["compiled_calls"] > 0


def test_a_kernel_call_refuses_what_is_not_its_arguments(fast, tmp_path, monkeypatch):
    """A wrong count of arguments or one that is not a tensor: a TypeError naming it,
    before the kernel runs; a file that is not a kernel library: no runner (torch's then)."""
    from descent.engine import aot

    monkeypatch.setattr(native, "module", lambda: fast)
    p = torch.nn.Parameter(torch.zeros(3000))
    opt = descent.SGD([p], lr=0.1, compile=True)
    p.grad = torch.ones(3000)
    opt.step()
    kern = next(k for k in opt._engine.groups[0].buckets[0].kernels.values() if k is not None)
    run = _runner(fast, aot.paths(kern.key)[0])
    assert run is not None
    args = [p.detach(), torch.ones(3000), torch.zeros(sum(len(k) for k in kern.spec.names))]
    with pytest.raises(TypeError, match="the kernel takes 3 tensors, not 2"):
        run(args[:2])
    with pytest.raises(TypeError, match="argument 1 of a kernel call is not a tensor"):
        run([args[0], 1.0, args[2]])
    assert torch.equal(p, torch.full((3000,), -0.1))  # (nothing ran)
    bad = tmp_path / "x.pt2"
    bad.write_bytes(b"not a zip")
    assert native.kernel_handle(bad) is None


# -- the block cache (large freed CPU blocks kept for the next gradient) ----------------

MiB = 1 << 20


@pytest.fixture
def cache(fast):
    """The block cache in front of torch's CPU allocator, keeping up to 8 MiB of blocks
    of 1 MiB or more; stepped aside after the test."""
    assert fast.block_cache(8 * MiB, MiB) is True
    yield fast
    assert fast.block_cache(0, 0) is True
    assert fast.block_cache_info()["on"] is False


def _block(n: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.uint8)


def test_a_freed_large_block_serves_the_next_allocation_that_fits_it(cache):
    a = _block(2 * MiB)
    where = a.data_ptr()
    a.fill_(7)
    assert int(a[-1]) == 7  # (memory to use like any other)
    before = cache.block_cache_info()
    del a
    info = cache.block_cache_info()
    assert (info["cached"], info["blocks"]) == (before["cached"] + 2 * MiB, before["blocks"] + 1)
    b = _block(2 * MiB - 4096)  # within an eighth: the same block
    assert b.data_ptr() == where
    assert cache.block_cache_info()["hits"] == before["hits"] + 1
    del b
    c = _block(MiB)  # the 2 MiB block would waste more than an eighth: new memory
    assert c.data_ptr() != where
    assert cache.block_cache_info()["misses"] == before["misses"] + 1


def test_small_allocations_pass_by_and_the_cache_keeps_at_most_its_cap(cache):
    before = cache.block_cache_info()
    small = [_block(MiB - 1) for _ in range(3)]
    del small
    assert cache.block_cache_info()["cached"] == before["cached"]  # (below 1 MiB: not kept)
    big = [_block(3 * MiB) for _ in range(4)]
    where = [t.data_ptr() for t in big]
    while big:  # (freed in order)
        big.pop(0)
    info = cache.block_cache_info()
    assert info["cached"] <= 8 * MiB and info["blocks"] == 2  # the two freed last
    again = [_block(3 * MiB) for _ in range(2)]
    assert sorted(t.data_ptr() for t in again) == sorted(where[2:])


def test_blocks_handed_out_before_it_steps_aside_are_freed_then(fast):
    assert fast.block_cache(8 * MiB, MiB) is True
    kept = _block(2 * MiB)
    kept[0] = 3
    assert fast.block_cache(0, 0) is True
    info = fast.block_cache_info()
    assert (info["on"], info["cached"], info["blocks"]) == (False, 0, 0)
    assert int(kept[0]) == 3
    del kept  # (back to torch's allocator, not into the cache)
    assert fast.block_cache_info()["cached"] == 0
    misses = fast.block_cache_info()["misses"]
    _block(2 * MiB)
    assert fast.block_cache_info()["misses"] == misses  # (torch's own allocator again)


def test_a_forked_process_allocates_through_it(cache):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_alloc_in_child).get(timeout=60) == 2 * MiB


def _alloc_in_child() -> int:
    t = _block(2 * MiB)
    del t
    return int(_block(2 * MiB).numel())


def test_bad_sizes_are_refused_naming_them(fast):
    with pytest.raises(ValueError, match="got -1, 0"):
        fast.block_cache(-1, 0)


def test_threads_allocating_and_freeing_at_once_each_keep_their_own_values(cache):
    """Four threads take and give back blocks through the cache at once: every tensor
    holds what its thread wrote until freed (no block handed out twice), and the cache
    never holds more than its cap."""
    import threading

    wrong: list[str] = []

    def work(k: int) -> None:
        for i in range(150):
            mine = [_block(2 * MiB + 4096 * (j % 2)).fill_((k * 7 + i + j) % 251) for j in range(3)]
            for j, t in enumerate(mine):
                if int(t[0]) != (k * 7 + i + j) % 251 or int(t[-1]) != (k * 7 + i + j) % 251:
                    wrong.append(f"thread {k}, round {i}, tensor {j}")
            del mine

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []
    info = cache.block_cache_info()
    assert info["cached"] <= 8 * MiB and info["hits"] > 0


# -- pack: a step's numbers separated from its flags -------------------------------------


def test_pack_answers_what_the_python_pack_answers(fast):
    """Every built-in optimizer's scalars at its first steps (RAdam's flag flips, NAdam
    has host scalars), and random dicts of numbers, flags and other values."""
    import random

    from descent.bench import OPTIMIZERS
    from descent.engine.kernels import fresh_scalars, pack_py

    cases = []
    for cls, _, kw in OPTIMIZERS.values():
        opt = cls([torch.nn.Parameter(torch.zeros(3))], **kw)
        group = opt.param_groups[0]
        scalars = fresh_scalars(opt.chain(group), group)
        cases += [next(scalars) for _ in range(8)]
    rnd = random.Random(0)
    pool = [True, False, 0, 1, 0.5, -2.0, 1e-300, None, "x", (1,), torch.tensor(1.0)]
    for _ in range(300):
        cases.append(
            [{f"k{j}": rnd.choice(pool) for j in range(rnd.randrange(5))} for _ in range(rnd.randrange(6))]
        )
    assert any(v is True for hs in cases for h in hs for v in h.values())
    for hs in cases:
        got, want = fast.pack(hs), pack_py(hs)
        assert got[:2] == want[:2]
        assert len(got[2]) == len(want[2]) and all(a is b for a, b in zip(got[2], want[2]))


def test_pack_leaves_anything_but_a_list_of_plain_dicts_to_python(fast):
    class Sub(dict):
        pass

    assert fast.pack(({"a": 1.0},)) is None
    assert fast.pack([{"a": 1.0}, Sub(b=2.0)]) is None
    assert fast.pack([{"a": 1.0}, [("b", 2.0)]]) is None


@pytest.mark.compiled
def test_a_kernel_loaded_before_the_module_arrived_goes_through_it_once_it_is_there(fast, monkeypatch):
    """Kernels cached, the module still being built: they load through torch's runner.
    Once the module is there, their next call opens their library through it and the
    step's calls are made whole in C++ (``call``), with the same bits as steps that
    never had the module."""
    from descent.engine import kernels

    monkeypatch.setattr(kernels, "_kernels", {})  # (loaded in this test)
    monkeypatch.setattr(native, "module", lambda: None)
    shapes = [(LARGE + 1,), (40, 30), (301,), (5,)]
    gen = torch.Generator().manual_seed(4)
    init = [torch.randn(s, generator=gen) for s in shapes]
    ours, twin = ([torch.nn.Parameter(x.clone()) for x in init] for _ in range(2))
    opt = descent.Adam(ours, compile=True)
    python = descent.Adam(twin, compile=True)
    spy = _Spy(fast)
    for step in range(5):
        for a, b in zip(ours, twin):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        arrived = step >= 2
        monkeypatch.setattr(native, "module", (lambda: spy) if arrived else (lambda: None))
        opt.step()
        monkeypatch.setattr(native, "module", lambda: None)
        python.step()
        if step == 0:
            for o in (opt, python):
                for b in o._engine.groups[0].buckets:
                    for k in b.kernels.values():
                        assert k is None or (k.ready(True) and k.handle is None)
        for a, b in zip(ours, twin):
            assert torch.equal(a, b), step
    kern = next(k for k in opt._engine.groups[0].buckets[0].kernels.values() if k is not None)
    assert kern.handle is not None and kern.pt2 is None
    assert spy.seen["call"].count(True) >= 2
