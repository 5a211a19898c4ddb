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
from typing import Any

import torch

from ..rules.base import Chain
from . import tensorwise


def step(chain: Chain, group: Mapping[str, Any], state: Any, state_step: bool, who: str) -> None:
    """One differentiable step of ``group`` with its ``chain`` (grad mode must be on)."""
    for p in group["params"]:
        g = p.grad
        if g is None:
            continue
        if g.layout != torch.strided:
            raise RuntimeError(f"{who}(differentiable=True) does not support sparse gradients")
        st, started = tensorwise.prepare(state, state_step, chain, group, p)
        hs = tensorwise.advance(state_step, chain, group, st, started)
        # The rules update their state in place, and autograd keeps what a step reads (a
        # momentum buffer that becomes the direction): each step works on copies, so the
        # next one overwrites nothing this one's gradient needs.
        work = {k: st[k].clone() for k in chain.state}
        tensorwise.update(chain, p, g, work, hs)
        for k, v in work.items():
            st[k].copy_(v)
