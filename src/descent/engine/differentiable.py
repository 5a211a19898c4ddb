"""``differentiable=True``: a param group's step run through autograd.

torch.optim runs such a step under grad mode so that the updated params and state carry
gradients back to the params, gradients, state and hyperparameter tensors they came from
(meta-learning, hypergradients). Here the same chain every other step runs is applied
eagerly, param by param, with autograd recording it: no flat buffers, no compiled kernel,
the params and their ``optimizer.state`` entries updated in place as torch.optim updates
them (a param must therefore not be a leaf that requires grad, as with torch.optim).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from . import tensorwise

if TYPE_CHECKING:
    from ..optim.base import RuleOptimizer


def step(opt: RuleOptimizer, group: Mapping[str, Any]) -> None:
    """One differentiable step of ``group`` (grad mode must be on)."""
    chain = opt.chain(group)
    for p in group["params"]:
        g = p.grad
        if g is None:
            continue
        if g.layout != torch.strided:
            raise RuntimeError(f"{type(opt).__name__}(differentiable=True) does not support sparse gradients")
        st, started = tensorwise.prepare(opt, chain, group, p)
        hs = tensorwise.advance(opt, chain, group, st, started)
        # The rules update their state in place, and autograd keeps what a step reads (a
        # momentum buffer that becomes the direction): each step works on copies, so the
        # next one overwrites nothing this one's gradient needs.
        work = {k: st[k].clone() for k in chain.state}
        tensorwise.update(chain, p, g, work, hs)
        for k, v in work.items():
            st[k].copy_(v)
