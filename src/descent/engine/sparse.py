"""Sparse gradients (``nn.Embedding(sparse=True)``): the rule applied to the rows a
gradient names, with the state kept dense, as torch.optim keeps it.

The flat engine steps dense gradients; a sparse one stops it (:class:`SparseGradient`,
raised before anything is written) and the optimizer steps again through :func:`step`:
the dense params through the engine, each sparse one here. A chain whose every transform
leaves a coordinate with a zero gradient as it is (:attr:`Transform.sparse`: AdaGrad, SGD
without momentum or weight decay) runs on the named rows alone; any other (momentum,
weight decay: every row moves) runs on the whole tensor with the gradient made dense,
which is what torch.optim's sparse arithmetic amounts to there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import tensorwise

if TYPE_CHECKING:
    from ..optim.base import RuleOptimizer


def step(opt: RuleOptimizer) -> None:
    """A step in which some gradients are sparse; torch.optim's error for an optimizer
    that takes none, before anything moves."""
    found = [
        (group, p)
        for group in opt.param_groups
        if not group.get("differentiable")
        for p in group["params"]
        if p.grad is not None and p.grad.layout != torch.strided
    ]
    for group in {id(g): g for g, _ in found}.values():
        opt.check_sparse(group)
    grads = [p.grad for _, p in found]
    for _, p in found:
        p.grad = None  # the engine leaves a param without a gradient as it is
    try:
        opt._engine.step()
    finally:
        for (_, p), g in zip(found, grads):
            p.grad = g
    for (group, p), g in zip(found, grads):
        _rows(opt, group, p, g)


def _rows(opt: RuleOptimizer, group: dict, p: Tensor, grad: Tensor) -> None:
    chain = opt.chain(group)
    st, started = tensorwise.prepare(opt, chain, group, p)
    hs = tensorwise.advance(opt, chain, group, st, started)
    bufs = {k: st[k] for k in chain.state}
    if not all(tr.sparse for tr in chain.transforms):
        tensorwise.update(chain, p.data, grad.to_dense(), bufs, hs)
        return
    grad = grad.coalesce()  # repeated indices summed: the update is not linear in them
    where = tuple(grad._indices())
    rows, parts = p.data[where], {k: v[where] for k, v in bufs.items()}
    tensorwise.update(chain, rows, grad._values(), parts, hs)
    p.data[where] = rows
    for k, v in parts.items():
        bufs[k][where] = v
