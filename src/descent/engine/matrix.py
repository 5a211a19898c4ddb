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
from . import formats, tensorwise
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


def step(
    chain: Chain,
    group: Mapping[str, Any],
    state: Any,
    state_step: bool,
    who: str,
    state_dtype: str | None = None,
    sr: bool = False,
    count: int = 0,
) -> None:
    """One step of ``group`` (grad mode off). ``state_dtype`` / ``sr``: state kept in a
    format and bfloat16 params rounded stochastically, as the flat engine does (see
    :func:`_load`); ``count``: this optimizer's steps so far, which seeds the rounding
    of a rule that keeps no ``step`` (Muon)."""
    check(group, who)
    params = [p for p in group["params"] if p.grad is not None]
    place = {id(p): i for i, p in enumerate(group["params"])}  # a param's rounding stream
    while params:
        # a param listed twice is stepped twice, as torch.optim does: once per pass
        seen: set[int] = set()
        batches: dict[tuple, list[tuple[Tensor, Tensor, dict, int]]] = {}
        later = []
        for p in params:
            if id(p) in seen:
                later.append(p)
                continue
            seen.add(id(p))
            st, started = tensorwise.prepare(state, state_step, chain, group, p)
            host = tuple(float(st[k]) for k in chain.host if k in st)
            fmt = formats.for_bucket(state_dtype, sr, p.numel(), p.dtype) if state_dtype or sr else None
            key = (tuple(p.shape), p.dtype, p.device, started, host, fmt)
            batches.setdefault(key, []).append((p, p.grad, st, place[id(p)]))
        for (_, _, _, started, _, fmt), items in batches.items():
            _batch(chain, group, items, state_step, started, fmt, count)
        params = later


def _batch(
    chain: Chain,
    group: Mapping[str, Any],
    items: list,
    state_step: bool,
    started: bool,
    fmt: formats.Format | None,
    count: int,
) -> None:
    p0, _, st0, _ = items[0]
    hs = tensorwise.advance(state_step, chain, group, st0, started)
    for _, _, st, _ in items[1:]:  # the same host scalars: the first param's, advanced
        if state_step:
            st["step"] += 1
        for k in chain.host[1:]:
            st[k].copy_(st0[k])
    hs = _numbers(chain, hs, p0)
    names = list(chain.buffers(tuple(p0.shape)))
    if fmt is None and any(k + formats.CODES_SUFFIX in st for _, _, st, _ in items for k in names):
        fmt = formats.Format()  # an 8-bit checkpoint loaded into float32 state: decoded once
    # State kept in a format is decoded to float32 before the update and encoded after it
    # (_load, _store); float32 state is updated where it lies. bfloat16 params rounded
    # stochastically are updated as float32 copies, written back rounded.
    sr = fmt is not None and fmt.sr
    work = [p.float() if sr else p for p, _, _, _ in items]
    grads = [g.float() if sr else g for _, g, _, _ in items]
    values = [_load(st, names) if fmt is not None else {k: st[k] for k in names} for _, _, st, _ in items]
    if len(items) == 1 or p0.numel() >= STACK_MAX:
        # a batch of one as views: the update lands in place, nothing is copied
        for w, g, v in zip(work, grads, values):
            chain.update(w.unsqueeze(0), g.unsqueeze(0), {k: v[k].unsqueeze(0) for k in names}, hs)
    else:
        P, G = torch.stack(work), torch.stack(grads)
        S = {k: torch.stack([v[k] for v in values]) for k in names}
        chain.update(P, G, S, hs)
        torch._foreach_copy_(work, list(P.unbind(0)))
        for k, v in S.items():
            torch._foreach_copy_([vs[k] for vs in values], list(v.unbind(0)))
    if fmt is None:
        return
    step = int(float(st0["step"]) if state_step else count)
    for (p, _, st, place), w, v in zip(items, work, values):
        for j, k in enumerate(names):
            _store(st, k, v[k], fmt, formats.step_key(place + 1, step, j + 1))
        if sr:
            p.copy_(_rounded(w, formats.step_key(place + 1, step, 0)))


def _load(st: dict, names: list[str]) -> dict[str, Tensor]:
    """The state ``names`` of one param as float32 tensors to step: 8-bit codes decoded,
    bfloat16 values widened, float32 ones as they are (updated in place)."""
    out = {}
    for k in names:
        codes = st.get(k + formats.CODES_SUFFIX)
        if codes is not None:
            scales = st[k + formats.SCALE_SUFFIX]
            out[k] = formats.decode_like(codes, scales)
        else:
            v = st[k]
            out[k] = v.float() if v.dtype in (torch.bfloat16, torch.float16) else v
    return out


def _store(st: dict, k: str, v: Tensor, fmt: formats.Format, key: int) -> None:
    """Buffer ``k`` of one param back into ``st`` in ``fmt`` (in place where it already
    is in that format, as torch.optim keeps its state tensors)."""
    kind = fmt.state if v.numel() >= formats.MIN_NUMEL else None
    if kind == "8bit":
        codes, scales = formats.encode(v.reshape(-1))
        codes = codes.reshape(v.shape)
        old, old_scales = st.get(k + formats.CODES_SUFFIX), st.get(k + formats.SCALE_SUFFIX)
        if (
            old is not None
            and old.shape == codes.shape
            and old_scales is not None
            and old_scales.shape == scales.shape
        ):
            old.copy_(codes)
            old_scales.copy_(scales)
        else:
            st[k + formats.CODES_SUFFIX], st[k + formats.SCALE_SUFFIX] = codes, scales
        st.pop(k, None)
    elif kind == "bfloat16":
        new = _rounded(v, key)
        old = st.get(k)
        if old is not None and old.dtype == torch.bfloat16 and old.shape == new.shape:
            old.copy_(new)
        else:
            st[k] = new
    else:  # kept in float32 (a small buffer), perhaps read from another format
        old = st.get(k)
        if old is not v:
            if old is not None and old.shape == v.shape and old.dtype == v.dtype:
                old.copy_(v)
            else:
                st[k] = v.clone()
        st.pop(k + formats.CODES_SUFFIX, None)
        st.pop(k + formats.SCALE_SUFFIX, None)


def _rounded(v: Tensor, key: int) -> Tensor:
    """float32 ``v`` as bfloat16, rounded stochastically with bits hashed from each
    element's place and ``key`` (:func:`.formats.round_bf16`)."""
    pos = torch.arange(v.numel(), dtype=torch.int32, device=v.device)
    bits = formats.hash32(pos, torch.tensor(key, dtype=torch.int32, device=v.device))
    return formats.round_bf16(v.reshape(-1), bits).reshape(v.shape)


def _numbers(chain: Chain, hs: list[Scalars], like: Tensor) -> list[Scalars]:
    """The elementwise transforms' numbers as 0-d tensors (as every path hands them); a
    whole-tensor transform's as they are (loop counts, coefficients, names)."""
    tensors = tensorwise.numbers([{} if tr.whole else h for tr, h in zip(chain.transforms, hs)], like)
    return [h if tr.whole else t for tr, h, t in zip(chain.transforms, hs, tensors)]
