"""Running a chain's elementwise math: eagerly, or as one compiled kernel.

The compiled kernel is ``torch.compile(..., dynamic=True)`` over 1-D buffers with every
number passed in one tensor, so neither a new size nor a scheduled lr recompiles it.
``bool`` scalars are static: the kernel is specialized on them. Each (chain, statics)
pair gets its own code object, so dynamo's per-code recompile limit is never shared
between optimizers.
"""

from __future__ import annotations

import os
import types
import warnings
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from ..rules.base import Chain, Scalars

#: Eager runs over longer buffers go in chunks of this many elements, so temporaries stay
#: bounded instead of proportional to the parameter count. Not smaller: every eager op is
#: an OpenMP fork/join, and with 64K-element chunks a busy 2-core machine spent 50× the
#: step time in barriers (measured: 713 ms vs 17 ms for Adam over 4 M params).
CHUNK = 1 << 18

_kernels: dict[Hashable, Callable[..., None]] = {}
_failed: set[Hashable] = set()
#: Number of kernels built by torch.compile in this process (tests count recompiles).
stats = {"built": 0, "compiled_calls": 0, "eager_calls": 0}


def split(hs: Sequence[Scalars]) -> tuple[tuple, tuple, list[float]]:
    """Separate static (bool) scalars from numeric ones, in a stable layout."""
    statics = tuple(tuple((k, v) for k, v in h.items() if isinstance(v, bool)) for h in hs)
    names = tuple(tuple(k for k, v in h.items() if not isinstance(v, bool)) for h in hs)
    values = [float(v) for h in hs for v in h.values() if not isinstance(v, bool)]
    return statics, names, values


def _build(chain: Chain, statics: tuple, names: tuple) -> Callable[..., None]:
    state_names = chain.state

    def kernel(p, g, scal, *bufs):
        s = dict(zip(state_names, bufs))
        hs = []
        i = 0
        for fixed, keys in zip(statics, names):
            h = dict(fixed)
            for k in keys:
                h[k] = scal[i]
                i += 1
            hs.append(h)
        chain.update(p, g, s, hs)

    stats["built"] += 1
    name = f"descent_step_{stats['built']}"
    code = kernel.__code__.replace(co_name=name)
    fn = types.FunctionType(code, kernel.__globals__, name, None, kernel.__closure__)
    return torch.compile(fn, dynamic=True, fullgraph=True, options=_options())


def _options() -> dict[str, object]:
    # With dynamic sizes inductor decides whether a CPU loop gets an OpenMP parallel
    # region from the size seen at compile time, and its on-disk cache then serves that
    # decision for every size: a kernel first compiled on a small model ran
    # single-threaded on big ones (16 vs 24 GB/s measured on 2 cores). dynamic_threads
    # always emits the parallel region and lets OpenMP size it at run time.
    from torch._inductor import config

    return {"cpp.dynamic_threads": True} if hasattr(config.cpp, "dynamic_threads") else {}


def run_eager(chain: Chain, hs: Sequence[Scalars], p: Tensor, g: Tensor, s: dict[str, Tensor]) -> None:
    stats["eager_calls"] += 1
    n = p.numel()
    if p.dim() != 1 or n <= CHUNK:
        chain.update(p, g, s, hs)
        return
    for a in range(0, n, CHUNK):
        b = a + CHUNK
        chain.update(p[a:b], g[a:b], {k: v[a:b] for k, v in s.items()}, hs)


def run_compiled(chain: Chain, hs: Sequence[Scalars], p: Tensor, g: Tensor, s: dict[str, Tensor]) -> bool:
    """Run the compiled kernel; False when compiling is unavailable (caller runs eagerly)."""
    statics, names, values = split(hs)
    key = (chain.key, statics, names)
    if key in _failed:
        return False
    fn = _kernels.get(key)
    if fn is None:
        fn = _kernels[key] = _build(chain, statics, names)
    # The numbers in the params' compute precision, as torch rounds a Python scalar for
    # an op on float32 (or bf16/fp16, computed in float32) tensors: exact in float64.
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    scal = torch.tensor(values, dtype=dtype, device=p.device)
    try:
        fn(p, g, scal, *(s[k] for k in chain.state))
    except Exception as exc:  # a missing compiler or an inductor bug: fall back, loudly once
        _failed.add(key)
        warnings.warn(
            f"descent: compiling the step failed ({type(exc).__name__}: {exc}); "
            "running it eagerly instead (same math, slower).",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    stats["compiled_calls"] += 1
    return True


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
    """Forget every compiled kernel (tests use this to count compilations)."""
    _kernels.clear()
    _failed.clear()
    for k in stats:
        stats[k] = 0
