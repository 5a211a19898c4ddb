"""The step of a chain that sees whole tensors (Muon's Newton–Schulz, Adafactor's factored
moments): params batched by shape, the chain run once per batch.

Params of a group that share shape, dtype, device and host scalars (``step`` …) form a
batch: their tensors are stacked along a new leading dimension, so a whole-tensor
transform does one batched matmul or reduction for all of them (torch.optim.Muon calls
Newton–Schulz once per tensor; large tensors, whose work dwarfs a call, are not
stacked but stepped one by one as batches of one), and the elementwise transforms before and after it run
over the stack as plain tensor ops. The state stays in ``optimizer.state[p]`` as plain
tensors, shaped and named as torch.optim keeps them (``row_var`` is A × 1), so
``state_dict``, checkpoints and edits between steps are torch.optim's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..rules.base import Chain, Scalars
from . import tensorwise
from .body import nonfinite

#: Same-shape tensors at least this long are stepped one by one (as batches of one): a
#: call per tensor then costs little beside its work, where stacking would copy the params,
#: gradients and state in and out (four passes of memory traffic for nothing).
STACK_MAX = 1 << 16


def check(group: Mapping[str, Any], who: str) -> None:
    """torch.optim's refusals (sparse gradients, complex params), before any write."""
    for p in group["params"]:
        g = p.grad
        if g is None:
            continue
        if p.is_complex():
            raise RuntimeError(f"{who} does not support complex parameters")
        if g.layout != torch.strided:
            raise RuntimeError(f"{who} does not support sparse gradients")
        if g.shape != p.shape:
            raise RuntimeError(
                f"{who}: a gradient has shape {tuple(g.shape)} but its param {tuple(p.shape)}; "
                "nothing was updated"
            )


def finite(groups: Sequence[Mapping[str, Any]]) -> bool:
    """Every gradient of these groups holds no inf or NaN (one host read)."""
    flags = [
        nonfinite(p.grad)
        for group in groups
        for p in group["params"]
        if p.grad is not None and p.grad.numel()
    ]
    return not flags or not bool(torch.stack([f.cpu() for f in flags]).any())


def step(chain: Chain, group: Mapping[str, Any], state: Any, state_step: bool, who: str) -> None:
    """One step of ``group`` (grad mode off)."""
    check(group, who)
    params = [p for p in group["params"] if p.grad is not None]
    while params:
        # a param listed twice is stepped twice, as torch.optim does: once per pass
        seen: set[int] = set()
        batches: dict[tuple, list[tuple[Tensor, Tensor, dict]]] = {}
        later = []
        for p in params:
            if id(p) in seen:
                later.append(p)
                continue
            seen.add(id(p))
            st, started = tensorwise.prepare(state, state_step, chain, group, p)
            host = tuple(float(st[k]) for k in chain.host if k in st)
            key = (tuple(p.shape), p.dtype, p.device, started, host)
            batches.setdefault(key, []).append((p, p.grad, st))
        for (_, _, _, started, _), items in batches.items():
            _batch(chain, group, items, state_step, started)
        params = later


def _batch(chain: Chain, group: Mapping[str, Any], items: list, state_step: bool, started: bool) -> None:
    p0, _, st0 = items[0]
    hs = tensorwise.advance(state_step, chain, group, st0, started)
    for _, _, st in items[1:]:  # the same host scalars: the first param's, advanced
        if state_step:
            st["step"] += 1
        for k in chain.host[1:]:
            st[k].copy_(st0[k])
    hs = _numbers(chain, hs, p0)
    names = list(chain.buffers(tuple(p0.shape)))
    if len(items) == 1 or p0.numel() >= STACK_MAX:
        # a batch of one as views: the update lands in place, nothing is copied
        for p, g, st in items:
            chain.update(p.unsqueeze(0), g.unsqueeze(0), {k: st[k].unsqueeze(0) for k in names}, hs)
        return
    params = [p for p, _, _ in items]
    P = torch.stack(params)
    G = torch.stack([g for _, g, _ in items])
    S = {k: torch.stack([st[k] for _, _, st in items]) for k in names}
    chain.update(P, G, S, hs)
    torch._foreach_copy_(params, list(P.unbind(0)))
    for k, v in S.items():
        torch._foreach_copy_([st[k] for _, _, st in items], list(v.unbind(0)))


def _numbers(chain: Chain, hs: list[Scalars], like: Tensor) -> list[Scalars]:
    """The elementwise transforms' numbers as 0-d tensors (as every path hands them); a
    whole-tensor transform's as they are (loop counts, coefficients, names)."""
    tensors = tensorwise.numbers([{} if tr.whole else h for tr, h in zip(chain.transforms, hs)], like)
    return [h if tr.whole else t for tr, h, t in zip(chain.transforms, hs, tensors)]
