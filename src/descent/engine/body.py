"""The code every compiled kernel is made of (its source is part of each kernel's name)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..rules.base import Scalars

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

    def forward(self, p, g, scal, bufs):
        spec = self.spec
        hs = unpack(spec.statics, spec.names, scal.unbind())
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


class Windows(torch.nn.Module):
    """The step over several windows in one call (``spec.windows`` of them): window ``k``
    is ``ps[k]``, ``gs[k]`` and its state ``bufs[k*m:(k+1)*m]`` (``m`` state buffers),
    each 1-D of a length of its own, every window with the same numbers. Inductor emits
    one loop per window inside one parallel region: a bucket whose gradients lie in many
    tensors is stepped in one call per ``windows`` of them, each gradient read where it
    lies."""

    def __init__(self, spec: Spec):
        super().__init__()
        self.spec = spec

    def forward(self, ps, gs, scal, bufs):
        spec = self.spec
        m = len(spec.state)
        hs = unpack(spec.statics, spec.names, scal.unbind())
        for k, (p, g) in enumerate(zip(ps, gs)):
            spec.chain.update(p, g, dict(zip(spec.state, bufs[k * m : (k + 1) * m])), hs)


def options() -> dict[str, object]:
    # With dynamic sizes inductor decides from the size seen at compile time whether a
    # CPU loop gets an OpenMP parallel region; dynamic_threads always emits it and lets
    # OpenMP size it at run time (a kernel traced on a small buffer ran single-threaded
    # on big ones: 16 vs 24 GB/s measured on 2 cores).
    from torch._inductor import config

    return {"cpp.dynamic_threads": True} if hasattr(config.cpp, "dynamic_threads") else {}
