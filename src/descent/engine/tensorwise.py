"""One param's step outside flat storage: the chain's math run eagerly on the param, its
gradient and its own ``optimizer.state`` entries.

Two paths take it: a ``differentiable=True`` param group (the math runs through autograd,
out of place where autograd needs the old value) and a sparse gradient (the math runs on
the rows the gradient names). Both keep the state in ``optimizer.state[p]`` as plain
tensors, named and laid out as torch.optim keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..rules.base import Chain, Host, Scalars, keep_graph
from .formats import CODES_SUFFIX
from .kernels import compute_dtype
from .layout import host_dtype


def prepare(
    state: Any, state_step: bool, chain: Chain, group: Mapping[str, Any], p: Tensor
) -> tuple[dict, bool]:
    """``state[p]`` with every entry the chain needs (new ones as torch.optim starts them:
    ``step`` 0, buffers filled with the rule's initial value, param-shaped or of the
    shape a whole-tensor transform keeps, such as Adafactor's row factor), and whether
    its buffers had started before. ``state_step``: the state publishes a ``step`` (all
    but SGD)."""
    st = state[p]
    for name in chain.host if state_step else chain.host[1:]:
        if name not in st:
            st[name] = torch.tensor(chain.host_init(name), dtype=host_dtype(chain, name))
    bufs = chain.buffers(tuple(p.shape))
    started = all(name in st or name + CODES_SUFFIX in st for name in bufs)
    for name, shape in bufs.items():
        if name not in st and name + CODES_SUFFIX not in st:  # (8-bit codes: see .matrix)
            fill = chain.fill(name, group)
            fill = complex(fill, fill) if p.is_complex() else fill
            if shape == tuple(p.shape):  # the param's layout, as torch.optim's zeros_like
                st[name] = torch.full_like(p, fill)
            else:
                st[name] = torch.full(shape, fill, dtype=p.dtype, device=p.device)
    return st, started and bool(bufs)


def advance(
    state_step: bool, chain: Chain, group: Mapping[str, Any], st: dict[str, Any], started: bool
) -> list[Scalars]:
    """Count the step and compute its numbers (hyperparameter tensors that require grad
    stay tensors, so their gradients flow). Without a ``step`` in the state (SGD, as
    torch.optim keeps it), a started buffer means a later step: all such a rule asks."""
    if state_step:
        step = st["step"]
        if step.requires_grad:
            raise RuntimeError("`requires_grad` is not supported for `step` in differentiable mode")
        step += 1
        t = float(step)
    else:
        t = 2.0 if started else 1.0
    names = chain.host[1:]
    # NAdam's mu_product: a tensor where it carries a gradient
    held = {k: st[k] if st[k].requires_grad else st[k].item() for k in names}
    host = Host(held, {k for k in names if st[k].dtype != torch.float64})
    chain.advance(group, t, host)
    values: dict[str, Any] = {"step": t}
    for k in names:  # stored in the state's dtype, as an in-place op on it rounds
        v = host[k]
        if isinstance(v, Tensor):
            if v is not st[k]:
                st[k].copy_(v)
        else:
            st[k].fill_(v)
        values[k] = st[k].clone() if st[k].requires_grad else st[k].item()
    with keep_graph():
        return chain.scalars(group, t, values)


def numbers(hs: list[Scalars], like: Tensor) -> list[Scalars]:
    """Every number as a 0-d tensor of the compute precision, as the engine hands them."""
    dtype = compute_dtype(like.dtype)

    def one(v: Any) -> Any:
        if v is True or v is False:
            return v
        if isinstance(v, Tensor):
            return v.to(dtype=dtype, device=like.device)
        return torch.tensor(v, dtype=dtype, device=like.device)

    return [{k: one(v) for k, v in h.items()} for h in hs]


def real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def update(chain: Chain, p: Tensor, g: Tensor, bufs: dict[str, Tensor], hs: list[Scalars]) -> None:
    """The chain's update in place on ``p`` and ``bufs`` (complex as real pairs)."""
    chain.update(real(p), real(g), {k: real(v) for k, v in bufs.items()}, numbers(hs, p))
