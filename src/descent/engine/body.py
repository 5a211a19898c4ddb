"""The code every compiled kernel is made of (its source is part of each kernel's name)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..rules.base import Chain, Scalars
from . import formats
from .formats import Format

if TYPE_CHECKING:
    from .aot import Spec


def unpack(statics: tuple, names: tuple, numbers: Sequence) -> list[Scalars]:
    """Per-transform scalar dicts from the flat ``numbers`` (0-d tensors) and statics."""
    hs = []
    i = 0
    for fixed, keys in zip(statics, names):
        h = dict(fixed)
        for k in keys:
            h[k] = numbers[i]
            i += 1
        hs.append(h)
    return hs


def nonfinite(g: Tensor) -> Tensor:
    """A 0-d flag on ``g``'s device, true when ``g`` holds an inf or NaN: one reduction,
    no temporary of g's size, no host sync. (``skip_nonfinite``, inside a kernel or
    before a step of several runs.)"""
    lo, hi = torch.aminmax(g)
    return ~(torch.isfinite(lo) & torch.isfinite(hi))


class Step(torch.nn.Module):
    """The kernel's body: the chain's update over 1-D buffers, every number in ``scal``."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec

    def forward(self, p, g, scal, bufs, key=None):
        spec = self.spec
        hs = unpack(spec.statics, spec.names, scal.unbind())
        if spec.fmt is not None:
            return stored(spec.chain, spec.fmt, hs, p, g, bufs, key, spec.guard)
        if not spec.guard:
            spec.chain.update(p, g, dict(zip(spec.state, bufs)), hs)
            return None
        # skip_nonfinite: one reduction over g and the update, in one kernel; every
        # buffer keeps its old value when g holds an inf or NaN.
        bad = nonfinite(g)
        new_p, new_bufs = p.clone(), [b.clone() for b in bufs]
        spec.chain.update(new_p, g, dict(zip(spec.state, new_bufs)), hs)
        for old, new in zip([p, *bufs], [new_p, *new_bufs]):
            old.copy_(torch.where(bad, old, new))
        return bad


def stored(
    chain: Chain,
    fmt: Format,
    hs: list[Scalars],
    p: Tensor,
    g: Tensor,
    bufs: list[Tensor],
    key: Tensor,
    guard: bool,
) -> Tensor | None:
    """The chain's update on state kept in ``fmt``: decoded on load, computed in float32
    (float64 for float64 params), encoded on store, in one pass. ``key``: the int32 pair
    (noise key of this step, position of the run's first element) that stochastic
    rounding hashes. Returns the flag ``bad`` with ``guard``."""
    compute = torch.float64 if p.dtype == torch.float64 else torch.float32
    pos = torch.arange(p.shape[0], dtype=torch.int32, device=p.device) + key[1]
    if fmt.state == "8bit":  # every tensor as rows of a block: one pass, block by block
        p, g, pos = formats.rows(p), formats.rows(g), formats.rows(pos)
    state = formats.load(fmt, bufs, compute)
    bad = nonfinite(g) if guard else None
    # (a float32 param is updated in place, unless the guard may have to keep it)
    direct = p.dtype == compute and not guard
    p32 = p if direct else p.to(compute, copy=True)
    chain.update(p32, g.to(compute), dict(zip(chain.state, state)), hs)
    if not direct:
        formats.write_param(fmt, p, p32, pos, key[0], bad)
    formats.store(fmt, bufs, state, pos, key[0], bad)
    return bad


def options() -> dict[str, object]:
    # With dynamic sizes inductor decides from the size seen at compile time whether a
    # CPU loop gets an OpenMP parallel region; dynamic_threads always emits it and lets
    # OpenMP size it at run time (a kernel traced on a small buffer ran single-threaded
    # on big ones: 16 vs 24 GB/s measured on 2 cores).
    from torch._inductor import config

    return {"cpp.dynamic_threads": True} if hasattr(config.cpp, "dynamic_threads") else {}
