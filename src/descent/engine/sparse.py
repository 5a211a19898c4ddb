"""Sparse gradients (``nn.Embedding(sparse=True)``): the rule applied to the rows a
gradient names, with the state kept dense, as torch.optim keeps it.

The flat engine steps dense gradients; a sparse one stops it (:class:`SparseGradient`,
raised before anything is written) and the optimizer steps again: the dense params
through the engine, each sparse one through :func:`rows`. A chain whose every transform
leaves a coordinate with a zero gradient as it is (:attr:`Transform.sparse`: AdaGrad, SGD
without momentum or weight decay) runs on the named rows alone; any other (momentum,
weight decay: every row moves) runs on the whole tensor with the gradient made dense,
which is what torch.optim's sparse arithmetic amounts to there.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..rules.base import Chain
from . import tensorwise


def rows(chain: Chain, group: dict, state: Any, state_step: bool, p: Tensor, grad: Tensor) -> None:
    """One param's step from its sparse gradient ``grad`` (``p.grad`` is not read)."""
    st, started = tensorwise.prepare(state, state_step, chain, group, p)
    hs = tensorwise.advance(state_step, chain, group, st, started)
    bufs = {k: st[k] for k in chain.state}
    if not all(tr.sparse for tr in chain.transforms):
        tensorwise.update(chain, p.data, grad.to_dense(), bufs, hs)
        return
    grad = grad.coalesce()  # repeated indices summed: the update is not linear in them
    where = tuple(grad._indices())
    part, parts = p.data[where], {k: v[where] for k, v in bufs.items()}
    tensorwise.update(chain, part, grad._values(), parts, hs)
    p.data[where] = part
    for k, v in parts.items():
        bufs[k][where] = v
