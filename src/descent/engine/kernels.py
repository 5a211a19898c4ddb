"""Running a chain's elementwise math: eagerly, or as one compiled kernel.

The rules are written with correctly rounded elementary operations only (see
``descent.rules.base``), and every number reaches them as a 0-d tensor of the compute
precision on both paths, so on the CPU the eager path and the compiled kernel give the
same bits (``tests/engine/test_kernels.py`` checks every optimizer). That is what lets
the first steps on a machine that has no kernel yet run eagerly while the kernel is
built in the background: when it arrives, nothing in the numbers changes. Where that
equality is not established (GPUs, float64 without NumPy), a step that wants a kernel
waits for it instead.

A kernel comes, in order of preference, from the on-disk cache of AOTInductor packages
(``aot``: loaded in milliseconds, no tracing), or from ``torch.compile`` in this process
where AOTInductor is unavailable or the chain's code has no source file to name it by.
"""

from __future__ import annotations

import array
import functools
import os
import struct
import sys
import time
import types
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence

import torch
from torch import Tensor

from ..rules.base import Chain, Host, Scalars, exact_sqrt
from . import aot, native
from .aot import Spec
from .body import Step, Windows, nonfinite, options, unpack
from .formats import BLOCK, Format, StoredStep, full_width, i32, stored
from .layout import host_dtype

#: Eager runs over longer buffers go in chunks of this many elements, so temporaries stay
#: bounded instead of proportional to the parameter count. Not smaller: every eager op is
#: an OpenMP fork/join, and with 64K-element chunks a busy 2-core machine spent 50× the
#: step time in barriers (measured: 713 ms vs 17 ms for Adam over 4 M params).
CHUNK = 1 << 18

#: Runs shorter than this step eagerly (the same numbers): the kernels are exported for
#: buffers of at least 2 elements. Even at 2 elements a kernel call beats the eager ops
#: (Adam on a 2-element param: 30 µs a step with the kernel, 92 µs eager, on the 2-core
#: machine), which is what the landscapes and the playground step.
KERNEL_MIN = 2

#: Kernel runs shorter than this run on one thread: ATen's own grain (32 K elements)
#: doubled for a step that touches several buffers per element.
PARALLEL_MIN = 1 << 16

#: How often a step looks for a kernel that is being built, in seconds.
POLL = 0.2

stats = {"built": 0, "loaded": 0, "compiled_calls": 0, "eager_calls": 0}

_LOW = (torch.bfloat16, torch.float16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision the math runs in: float64 for float64 params, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pack(hs: Sequence[Scalars]) -> tuple[tuple, tuple, list]:
    """Separate static (bool) scalars from numeric ones, in a stable layout:
    ``(statics, names, numbers)``. The C++ module does it for a list of plain dicts (a
    microsecond less a step), :func:`pack_py` otherwise, with the same answer."""
    fast = native.module()
    if fast is not None and (out := fast.pack(hs)) is not None:
        return out
    return pack_py(hs)


def pack_py(hs: Sequence[Scalars]) -> tuple[tuple, tuple, list]:
    """:func:`pack` in Python."""
    statics, names, numbers = [], [], []
    for h in hs:
        for v in h.values():  # (most transforms have no flag: a loop is cheaper than a set)
            if v is True or v is False:
                break
        else:
            statics.append(())
            names.append(tuple(h))
            numbers += h.values()
            continue
        fixed, keys = [], []
        for k, v in h.items():
            if v is True or v is False:
                fixed.append((k, v))
            else:
                keys.append(k)
                numbers.append(v)
        statics.append(tuple(fixed))
        names.append(tuple(keys))
    return tuple(statics), tuple(names), numbers


def fresh_scalars(chain: Chain, group: dict) -> Iterator[list[Scalars]]:
    """The chain's scalars at steps 1, 2, … of a param that starts now."""
    names = chain.host[1:]
    narrow = {k for k in names if host_dtype(chain, k) != torch.float64}
    held = {k: chain.host_init(k) for k in names}
    t = 0.0
    while True:
        t += 1
        host = Host(held, narrow)
        chain.advance(group, t, host)
        held = host.rounded()
        yield chain.scalars(group, t, {"step": t, **held})


class Numbers:
    """A step's numbers as one 1-D tensor in the params' compute precision, rounded as
    torch rounds a Python scalar for an op on float32 (or bf16/fp16, computed in float32)
    tensors, exact in float64. Written in place into the same host memory at every step of
    a bucket: a third of the cost of a new tensor (0.3 µs vs 0.9). Kernels read it
    synchronously on the CPU; a GPU gets a copy."""

    def __init__(self) -> None:
        self.key: tuple | None = None

    def fill(self, numbers: list, like: Tensor) -> Tensor:
        dtype = compute_dtype(like.dtype)
        key = (len(numbers), dtype)
        if key != self.key:
            code = "d" if dtype == torch.float64 else "f"
            self.host = array.array(code, bytes(len(numbers) * (8 if code == "d" else 4)))
            self.tensor = torch.frombuffer(self.host, dtype=dtype) if numbers else torch.empty(0, dtype=dtype)
            self.format = f"{len(numbers)}{code}"
            self.key = key
        if numbers:
            struct.pack_into(self.format, self.host, 0, *numbers)
        return self.tensor if like.device.type == "cpu" else self.tensor.to(like.device)

    def again(self, numbers: list) -> Tensor | None:
        """:meth:`fill` for a CPU kernel whose numbers have the last fill's layout (a
        repeated step); None when they do not."""
        if self.key is None or self.key[0] != len(numbers) or not numbers:
            return None
        struct.pack_into(self.format, self.host, 0, *numbers)
        return self.tensor


# -- eager ------------------------------------------------------------------------------
def run_eager(
    chain: Chain, statics: tuple, names: tuple, scal: Tensor, p: Tensor, g: Tensor, bufs: Sequence[Tensor]
) -> None:
    """The chain's update in bounded chunks; half precisions computed in float32, as the
    compiled kernel computes them."""
    stats["eager_calls"] += 1
    hs = unpack(statics, names, scal.unbind())
    n = p.numel()
    step = CHUNK if p.dim() == 1 else max(n, 1)
    for a in range(0, n, step):
        if p.dim() == 1:
            pc, gc, sc = p[a : a + step], g[a : a + step], [v[a : a + step] for v in bufs]
        else:
            pc, gc, sc = p, g, list(bufs)
        if pc.dtype in _LOW:
            p32, s32 = pc.float(), [v.float() for v in sc]
            chain.update(p32, gc.float(), dict(zip(chain.state, s32)), hs)
            pc.copy_(p32)
            for v, w in zip(sc, s32):
                v.copy_(w)
        else:
            chain.update(pc, gc, dict(zip(chain.state, sc)), hs)


def run_stored(
    chain: Chain,
    fmt: Format,
    statics: tuple,
    names: tuple,
    scal: Tensor,
    p: Tensor,
    g: Tensor,
    bufs: Sequence[Tensor],
    key: tuple[int, int],
) -> None:
    """:func:`run_eager` for state kept in ``fmt``: the kernel's own body, in chunks (a
    whole number of 8-bit blocks each, so a block never spans two)."""
    stats["eager_calls"] += 1
    hs = unpack(statics, names, scal.unbind())
    n = p.numel()
    two = fmt.state == "8bit"
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        sub = []
        for j, v in enumerate(bufs):
            sub.append(v[a // BLOCK : -(-b // BLOCK)] if two and j % 2 else v[a:b])
        k = torch.tensor([key[0], i32(key[1] + a)], dtype=torch.int32)
        stored(chain, fmt, hs, p[a:b], g[a:b], sub, k, False)


def interchangeable(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether eager steps give the kernel's bits, so they may stand in for it."""
    return device.type == "cpu" and exact_sqrt(compute_dtype(dtype))


# -- kernels ----------------------------------------------------------------------------
class Kernel:
    """One chain's compiled step for one dtype and device: loaded, being built, or not
    available (then callers run eagerly)."""

    def __init__(self, spec: Spec, device: torch.device):
        self.spec = spec
        self.device = device
        self.fn: Callable[[list[Tensor]], list[Tensor]] | None = None
        #: the kernel's library as the C++ module opened it (``native.call`` runs it), or
        #: None where ``fn`` runs it another way
        self.handle: object | None = None
        #: the package of a CPU kernel loaded through torch's runner, while the module
        #: may still come to open it (:meth:`opened`)
        self.pt2 = None
        self.dead = False
        self.key: str | None = None
        self.next_look = 0.0
        self.interim = interchangeable(spec.dtype, device)
        if aot.available():
            try:
                self.key = aot.digest(spec)
            except aot.Uncacheable:
                self.key = None

    def ready(self, wait: bool | None = None) -> bool:
        """True when :attr:`fn` can run.

        ``wait=True`` builds or loads the kernel first; ``False`` asks for it to be built
        and answers at once; ``None`` (a ``compile="auto"`` step) waits only where eager
        steps cannot stand in for the kernel bit for bit.
        """
        if self.fn is not None:
            return True
        if self.dead:
            return False
        wait = wait is True or (wait is None and not self.interim)
        if self.key is None:
            return self._jit() if wait else False
        now = time.monotonic()
        if not wait and now < self.next_look:
            return False
        self.next_look = now + POLL
        pt2, failed, _ = aot.paths(self.key)
        while True:
            if pt2.exists():
                return self._load(pt2)
            if failed.exists():
                return self._give_up(failed.read_text().splitlines()[1:2])
            if not aot.importable(self.spec.chain):
                return self._build_here() if wait else False
            if not wait and self.interim and not aot.background_builds():
                return False
            aot.builder.request(self.key, self.spec)
            if not wait:
                return False
            if not aot.builder.running(self.key) and not pt2.exists() and not failed.exists():
                return self._give_up(["the build process ended without a kernel; see " + str(pt2.parent)])
            time.sleep(0.05)

    def _load(self, path) -> bool:
        if self._open(path):
            stats["loaded"] += 1
            return True
        try:
            runner = aot.load(path, self.device)
        except Exception as exc:  # a damaged file: forget it, it is rebuilt next time
            path.unlink(missing_ok=True)
            return self._give_up([f"loading {path.name} failed: {exc}"])
        self.fn = _counted(runner.run)
        if self.device.type == "cpu":  # (opened by the C++ module once it is there: :meth:`opened`)
            self.pt2 = path
        stats["loaded"] += 1
        return True

    def _open(self, path) -> bool:
        """Run the CPU kernel at ``path`` through the C++ module's interface to its
        library (:attr:`handle`); False where the module or the library is not there."""
        handle = native.kernel_handle(path) if self.device.type == "cpu" else None
        fast = native.module()
        if handle is None or fast is None:
            return False
        self.handle = handle
        self.fn = _counted(functools.partial(fast.run, handle))
        return True

    def opened(self) -> object | None:
        """:attr:`handle`, where the C++ module arrived after this CPU kernel was loaded
        through torch's runner (its background build lands a few seconds into a process
        whose kernels were cached): the library is opened then, and the kernel's calls
        go through the module from that step on. Looked at while the module may still
        come, then no more."""
        if self.pt2 is None:
            return self.handle
        if native.module() is not None:
            path, self.pt2 = self.pt2, None
            self._open(path)
        elif native.why_not() is not None:  # (it will not come in this process)
            self.pt2 = None
        return self.handle

    def _build_here(self) -> bool:
        assert self.key is not None
        aot.build_once(self.key, self.spec)
        pt2, failed, _ = aot.paths(self.key)
        return self._load(pt2) if pt2.exists() else self._give_up(failed.read_text().splitlines()[1:2])

    def _jit(self) -> bool:
        """torch.compile in this process (no AOTInductor, or no source to name the code by)."""
        try:
            fn = _compile(self.spec)
        except Exception as exc:
            return self._give_up([f"{type(exc).__name__}: {exc}"])
        self.fn = _counted(fn)
        return True

    def _give_up(self, why: Sequence[str]) -> bool:
        self.dead = True
        warn(
            f"descent: no compiled kernel for {self.spec.describe()} ({' '.join(why)}); "
            "its steps run eagerly instead (same numbers on the CPU, slower)."
        )
        return False


_INTERNAL = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(torch.__file__))


def warn(message: str) -> None:
    """A RuntimeWarning attributed to the first caller outside descent and torch."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level + 1)


def _counted(fn: Callable[[list[Tensor]], list[Tensor]]) -> Callable[[list[Tensor]], list[Tensor]]:
    def run(args: list[Tensor]) -> list[Tensor]:
        out = fn(args)
        stats["compiled_calls"] += 1
        return out

    return run


def _compile(spec: Spec) -> Callable[[list[Tensor]], None]:
    body = (Windows(spec) if spec.windows else Step(spec) if spec.fmt is None else StoredStep(spec)).forward
    stats["built"] += 1
    # One code object per kernel, so dynamo's per-code recompile limit is not shared.
    name = f"descent_step_{stats['built']}"
    k = spec.windows

    if k:

        def kernel(*args):
            return body(list(args[:k]), list(args[k : 2 * k]), args[2 * k], list(args[2 * k + 1 :]))

    elif spec.fmt is None:

        def kernel(p, g, scal, *bufs):
            return body(p, g, scal, list(bufs))

    else:

        def kernel(p, g, scal, *rest):
            return body(p, g, scal, list(rest[:-1]), rest[-1])

    code = kernel.__code__.replace(co_name=name)
    fn = types.FunctionType(code, kernel.__globals__, name, None, kernel.__closure__)
    compiled = torch.compile(fn, dynamic=True, fullgraph=True, options=options())

    def run(args: list[Tensor]) -> list[Tensor]:
        with full_width():  # (the first call compiles)
            out = compiled(*args)
        return [] if out is None else [out]

    return run


_kernels: dict[Hashable, Kernel] = {}


def kernel_for(
    chain: Chain,
    statics: tuple,
    names: tuple,
    dtype: torch.dtype,
    device: torch.device,
    guard: bool = False,
    fmt: Format | None = None,
    windows: int = 0,
) -> Kernel:
    """The (cached) kernel of ``chain`` with these statics for buffers of ``dtype`` on
    ``device`` (``guard``: the ``skip_nonfinite`` variant; ``fmt``: state kept so;
    ``windows``: the variant that steps that many windows per call)."""
    k = (chain.key, statics, names, dtype, device, guard, fmt, windows)
    kern = _kernels.get(k)
    if kern is None:
        spec = Spec(chain, statics, names, dtype, device.type, guard, fmt, windows)
        kern = _kernels[k] = Kernel(spec, device)
    return kern


def finite(g: Tensor) -> bool:
    """Whether ``g`` holds no inf or NaN."""
    return g.numel() == 0 or not bool(nonfinite(g))


def compile_mode(requested: bool | str) -> bool | str:
    """The effective compile setting: ``DESCENT_COMPILE`` (0/1/auto) overrides the argument."""
    env = os.environ.get("DESCENT_COMPILE")
    if env is not None:
        env = env.strip().lower()
        if env in ("0", "false", "no", "off"):
            return False
        if env in ("1", "true", "yes", "on"):
            return True
        if env == "auto":
            return "auto"
        raise ValueError(f"DESCENT_COMPILE must be 0, 1 or auto, got {env!r}")
    if requested not in (True, False, "auto"):
        raise ValueError(f"Invalid compile setting: {requested!r} (expected True, False or 'auto')")
    return requested


def reset() -> None:
    """Forget every kernel this process loaded or compiled (tests count with this)."""
    _kernels.clear()
    for k in stats:
        stats[k] = 0
