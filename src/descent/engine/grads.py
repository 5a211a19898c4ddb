"""How a step reads a flat bucket's gradients: where autograd left them.

After ``zero_grad()`` (torch's default, ``set_to_none=True``) every backward hands the
optimizer new gradient tensors. Copying them into one flat buffer would read and write
every gradient once more and keep a gradient-sized buffer beside them; instead a run of
params is cut into *pieces*, each one kernel call over 1-D windows of the same length:

- ``span``: gradients that live in a flat buffer laid out like the params (DDP's bucket
  views, or ``zero_grad(set_to_none=False)``): one call over the whole range, no copy;
- ``one``: a large gradient read where it lies (one call costs far less than copying
  it);
- ``chunk``: consecutive small gradients copied into a small staging buffer laid out as
  their params are (it stays in cache), then one call over the range.

``p.grad`` is never rebound or written. The pieces of a run share every number of the
step, so cutting a run changes no bit of the result.

Where the chain has a *windows* kernel (one call steps up to ``k`` windows, each of its
own length; CPU buckets, state in the params' dtype), a run of fresh gradients is
stepped in :func:`calls` instead: every param of at least :data:`ALONE` elements is a
window read where its gradient lies, consecutive smaller ones are staged together into
one window, and ``k`` windows go in one call: gradients of 4 K … 64 K elements are no
longer copied, and a large one no longer costs a call of its own.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

import torch
from torch import Tensor

from . import native
from .bucket import Bucket
from .errors import SparseGradient
from .layout import LARGE, dense, staggered, window

#: Elements of the staging buffer (a chunk of small gradients): 1 MiB of float32, which
#: stays in the L2 cache of the core that copies and reads it.
STAGE = 1 << 18

#: In a call of several windows, a param of at least this many elements is a window of
#: its own (its gradient read in place); smaller ones are staged together. A window costs
#: one more loop in the kernel and a view here (about a microsecond); staging costs a copy
#: of the gradient (about 0.3 ns an element on the 2-core machine, and a copy op per
#: gradient). Measured there with the replayed step and barrier-free window loops (µs a
#: step, alternated rounds, 16 K → 4 K): SGD 104 K / 611 K / 2.4 M 79 → 77 / 271 → 263 /
#: 763 → 749; Adam 104 K / 611 K / 2.4 M / 6.6 M 102 → 98 / 342 → 333 / 1027 → 990 /
#: 3714 → 3535; 1 K and 256 were no better (2.4 M: 787 and 790 for SGD).
ALONE = 1 << 12

#: Windows per call of a windows kernel: a transformer layer's dozen tensors in one call,
#: few padding windows for a small model's.
WINDOWS = 16

#: Elements of each padding window (a call of fewer than ``k`` windows fills the rest with
#: scratch the kernel steps harmlessly).
PAD = 16

_grad = operator.attrgetter("grad")
_shape = operator.attrgetter("shape")
_dtype = operator.attrgetter("dtype")
_layout = operator.attrgetter("layout")
_device_index = Tensor.get_device  # an int (-1: the CPU); .device would build an object each
_is_not = operator.is_not
_STRIDED = {torch.strided}
_data_ptr = Tensor.data_ptr

#: A piece of a run: what one kernel call reads (see the module's docstring).
Item = tuple


@dataclass
class Grads:
    """A flat bucket's gradients at one step."""

    #: which params have a gradient (None: all)
    has: list[bool] | None
    #: each param's ``.grad`` (None when every one is in the flat gradient buffer)
    grads: list[Tensor | None] | None
    #: per param, whether its gradient is its view of the flat gradient buffer
    #: (None: none is, or all are when ``grads`` is None)
    held: list[bool] | None = None


def check_grad(who: str, where: str, p: Tensor, g: Tensor) -> None:
    if g.layout != torch.strided:
        raise SparseGradient(f"{who} does not support sparse gradients ({where} has a {g.layout} grad)")
    pairs = (("shape", p.shape, g.shape), ("dtype", p.dtype, g.dtype), ("device", p.device, g.device))
    for what, want, got in pairs:
        if want != got:
            raise RuntimeError(
                f"{who}: the gradient of {where} has {what} {_fmt(got)} but the param has {_fmt(want)}; "
                "nothing was updated"
            )


def _fmt(v: object) -> str:
    return str(tuple(v)) if isinstance(v, torch.Size) else str(v)


Namer = Callable[[Tensor], str]


def _check_all(who: str, name: Namer, given: Sequence[Tensor], mine: Sequence[Tensor]) -> None:
    for g, p in zip(given, mine):
        check_grad(who, name(p), p, g)


def _wrong(b: Bucket, given: Sequence[Tensor], shapes: Sequence) -> bool:
    """Whether a gradient differs from the bucket's dtype, layout or device, or from its
    param's shape. The bucket's params share one dtype and device: one set of each and
    the list of shapes catch every wrong gradient (one gradient: compared directly,
    without the sets, the small model's case)."""
    if len(given) == 1:
        g = given[0]
        return (
            g.dtype is not b.dtype
            or g.layout is not torch.strided
            or g.get_device() != b.device_index
            or g.shape != shapes[0]
        )
    return (
        set(map(_dtype, given)) != {b.dtype}
        or set(map(_layout, given)) != _STRIDED
        or set(map(_device_index, given)) != {b.device_index}
        or list(map(_shape, given)) != shapes
    )


def collect(b: Bucket, who: str, name: Namer) -> Grads:
    """Which params have a gradient, and where each lies. Raises, naming the param,
    before anything is written when a gradient is sparse or of another shape, dtype or
    device."""
    if b.grads_in_place():
        return Grads(None, None)
    params = b.params
    fast = native.module()
    grads = None if fast is None else fast.grads(params, b.dtype, b.device_index, b.shapes)
    if grads is not None:  # every gradient present and as expected (looked at in C++)
        has = None
    else:
        g = params[0].grad if len(params) == 1 else None
        if g is not None:  # a bucket of one param, with its gradient: nothing to filter
            grads = given = [g]
            has, mine, shapes = None, params, b.shapes
        else:
            grads = list(map(_grad, params))
            has = list(map(_is_not, grads, repeat(None)))  # (`None in grads` would call Tensor.__eq__)
            if False in has:
                idx = [i for i, h in enumerate(has) if h]
                given, mine = [grads[i] for i in idx], [params[i] for i in idx]
                shapes = [b.shapes[i] for i in idx]
            else:
                has, given, mine, shapes = None, grads, params, b.shapes
        if given and _wrong(b, given, shapes):
            _check_all(who, name, given, mine)
    if not b.flat:
        return Grads(has, grads)
    held = None
    if b.G is not None:
        ptrs = b.gptrs
        held = [g is not None and g.data_ptr() == ptrs[i] for i, g in enumerate(grads)]
        if True in held:
            # the same memory under a new tensor object (DDP's new view of its bucket) is
            # read as a view only when laid out like the param
            for i, g in enumerate(grads):
                if held[i] and g is not b.gviews[i] and g.stride() != params[i].stride():
                    held[i] = False
        else:
            held = None
            b.release_grads()
    return Grads(has, grads, held)


def items(b: Bucket, a: int, c: int, gr: Grads) -> list[Item]:
    """The pieces of run ``a..c-1`` of a flat bucket."""
    if gr.grads is None:
        return [("span", a, c)]
    if gr.held is None:
        key = (a, c)
        plan = b.plans.get(key)
        if plan is None:
            plan = b.plans[key] = _fresh(b, a, c)
        return plan
    out: list[Item] = []
    i = a
    while i < c:  # alternate stretches of held and fresh gradients
        j = i
        while j < c and gr.held[j] == gr.held[i]:
            j += 1
        out += [("span", i, j)] if gr.held[i] else _fresh(b, i, j)
        i = j
    return out


def _fresh(b: Bucket, a: int, c: int) -> list[Item]:
    """Pieces of ``a..c-1`` when every gradient there is a tensor of its own."""
    out: list[Item] = []
    i = a
    while i < c:
        if b.numels[i] >= LARGE:
            out.append(("one", i))
            i += 1
            continue
        j = i + 1
        while j < c and b.numels[j] < LARGE and b.ends[j] - b.starts[i] <= STAGE:
            j += 1
        out.append(("one", i) if j == i + 1 else _chunk(b, i, j))
        i = j
    return out


def _chunk(b: Bucket, i: int, j: int, base: int = 0) -> Item:
    """Small params ``i..j-1`` staged together, from element ``base`` of the staging
    buffer on: the staging views each gradient is copied into (laid out as its param is
    in the flat buffer) and the gaps between them, which are zeroed so the kernel never
    reads a stale gradient there."""
    lo, hi = b.span(i, j)
    if b.staging is None:  # every chunk spans at most STAGE elements (a lone param is "one")
        b.staging = staggered(min(STAGE, b.size), 1, 0.0, dtype=b.dtype, device=b.device)
    s = b.staging
    views = []
    gaps = []
    for k in range(i, j):
        p = b.params[k]
        off = base + b.starts[k] - lo
        views.append(s.as_strided(p.shape, p.stride(), s.storage_offset() + off))
        end = base + b.ends[k] - lo
        stop = base + (b.starts[k + 1] if k + 1 < j else hi) - lo
        if stop > end:
            gaps.append(window(s, end, stop))
    return ("chunk", i, j, lo, hi, views, gaps)


def piece(b: Bucket, item: Item, names: Sequence[str], gr: Grads):
    """The 1-D tensors one kernel call reads for ``item``: ``(p, g, state)``."""
    call = prepared(b, item, names)
    stage(call, gr.grads)
    g = call.args[1] if not call.slots else _read(b, item[1], gr.grads[item[1]])
    return call.args[0], g, call.args[3:]


def prepared(b: Bucket, item: Item, names: Sequence[str]) -> Call:
    """The kernel call of piece ``item``, its step's numbers and in-place gradient left
    open (a :class:`Call` of one window): ``span`` reads the flat gradient buffer, ``one``
    a gradient where it lies, ``chunk`` the staging buffer its small gradients are copied
    into."""
    kind = item[0]
    if kind == "span":
        p, G, bufs = b.tensors(item[1], item[2], names)
        return Call([p, G, None, *bufs], 2, [], [], [], [], p.numel())
    if kind == "one":
        p, bufs = b.alone(item[1], names)
        return Call([p, None, None, *bufs], 2, [(1, item[1])], [], [], [], p.numel())
    _, i, j, lo, hi, views, gaps = item
    p, g, bufs = b.staged(lo, hi, names)
    return Call([p, g, None, *bufs], 2, [], views, list(range(i, j)), gaps, p.numel())


def stage(call: Call, grads: Sequence[Tensor | None] | None) -> None:
    """Copy ``call``'s small gradients into the staging buffer (and zero the gaps)."""
    if call.views:
        fast = native.module()
        if fast is not None and fast.stage(call.views, call.staged, grads, call.gaps):
            return
        torch._foreach_copy_(call.views, [grads[q] for q in call.staged])  # type: ignore[index]
        if call.gaps:
            torch._foreach_zero_(call.gaps)


def pieces(b: Bucket, item: Item, names: Sequence[str], gr: Grads):
    """The kernel calls of ``item``: one (:func:`piece`), except for a lone gradient read
    in place in an 8-bit bucket, whose calls must cover whole blocks: the gradient's whole
    blocks where it lies, then its last partial block staged with zeros after it."""
    if b.unit == 1 or item[0] != "one":
        yield piece(b, item, names, gr)
        return
    i = item[1]
    g = _read(b, i, gr.grads[i])
    lo, n = b.starts[i], b.numels[i]
    body = n - n % b.unit
    if body:
        yield window(b.P, lo, lo + body), g[:body], b.bufs(names, lo, lo + body)
    if body < n:
        if b.tail is None:
            b.tail = torch.zeros(b.unit, dtype=b.dtype, device=b.device)
        b.tail[: n - body].copy_(g[body:])
        b.tail[n - body :].zero_()
        yield window(b.P, lo + body, lo + body + b.unit), b.tail, b.bufs(names, lo + body, lo + body + b.unit)


@dataclass
class Call:
    """One call of a windows kernel: its arguments but the step's (``args``, with the
    numbers at ``scal`` and each gradient read in place at ``slots``: (position, param)),
    and the small gradients to stage first (``views`` ← params ``staged``, ``gaps``
    zeroed)."""

    args: list
    scal: int
    slots: list[tuple[int, int]]
    views: list[Tensor]
    staged: list[int]
    gaps: list[Tensor]
    n: int


def calls(b: Bucket, a: int, c: int, k: int, names: Sequence[str]) -> list[Call]:
    """Run ``a..c-1`` of a flat bucket (every gradient a tensor of its own) as calls of a
    ``k``-window kernel; made once per run and reused every step."""
    key = ("windows", a, c, k, tuple(names))
    plan = b.plans.get(key)
    if plan is None:
        plan = b.plans[key] = _calls(b, a, c, k, names)
    return plan


def _calls(b: Bucket, a: int, c: int, k: int, names: Sequence[str]) -> list[Call]:
    room = min(STAGE, b.size)
    spans: list[tuple[int, int]] = []  # windows: (i, i + 1) alone, (i, j) staged
    i = a
    while i < c:
        j = i + 1
        if b.numels[i] < ALONE:
            while j < c and b.numels[j] < ALONE and b.ends[j] - b.starts[i] <= room:
                j += 1
        spans.append((i, j))
        i = j
    out: list[Call] = []
    group: list[tuple[int, int]] = []
    staged = 0
    for i, j in spans:
        size = b.span(i, j)[1] - b.starts[i] if b.numels[i] < ALONE else 0
        if b.numels[i] < ALONE and size == 0:
            continue  # empty params only: nothing to step
        if group and (len(group) == k or staged + size > room):
            out.append(_call_of(b, group, k, names))
            group, staged = [], 0
        group.append((i, j))
        staged += size
    if group:
        out.append(_call_of(b, group, k, names))
    return out


def _call_of(b: Bucket, windows: list[tuple[int, int]], k: int, names: Sequence[str]) -> Call:
    m = len(names)
    ps: list = []
    gs: list = []
    bufs: list = []
    slots, views, staged, gaps = [], [], [], []
    base = n = 0
    for w, (i, j) in enumerate(windows):
        if b.numels[i] >= ALONE:
            p, sb = b.alone(i, names)
            ps.append(p)
            gs.append(None)
            slots.append((k + w, i))
            bufs += sb
            n += b.numels[i]
            continue
        _, _, _, lo, hi, v, z = _chunk(b, i, j, base)  # several chunks a call: each its own part
        views += v
        gaps += z
        staged += range(i, j)
        ps.append(window(b.P, lo, hi))
        gs.append(window(b.staging, base, base + hi - lo))
        bufs += b.bufs(names, lo, hi)
        base += hi - lo
        n += hi - lo
    pad = torch.zeros(max(k - len(windows), 0) * (2 + m) * PAD, dtype=b.dtype, device=b.device)
    for w in range(k - len(windows)):
        part = [window(pad, (w * (2 + m) + x) * PAD, (w * (2 + m) + x + 1) * PAD) for x in range(2 + m)]
        ps.append(part[0])
        gs.append(part[1])
        bufs += part[2:]
    return Call([*ps, *gs, None, *bufs], 2 * k, slots, views, staged, gaps, n)


def read_in_place(b: Bucket, i: int, g: Tensor) -> Tensor:
    """:func:`_read` that never uses the staging buffer (a call of several windows may
    hold staged gradients there)."""
    return _read(b, i, g, scratch=False)


def _read(b: Bucket, i: int, g: Tensor, scratch: bool = True) -> Tensor:
    """Param ``i``'s gradient as a 1-D window over its memory, laid out as the param is."""
    p = b.params[i]
    if g.is_contiguous() and p.is_contiguous() and not g._is_view():
        return g.view(-1)  # backward's own gradient: the cheapest 1-D view of it
    if g.stride() == p.stride() and (g.is_contiguous() or dense(g)):
        return window(g, 0, g.numel())
    # another layout (rare: autograd lays gradients out like their params): a copy that is
    if scratch and b.numels[i] <= STAGE and b.staging is not None and b.staging.numel() >= b.numels[i]:
        s = b.staging
    else:
        s = torch.empty(b.numels[i], dtype=b.dtype, device=b.device)
    s.as_strided(p.shape, p.stride(), s.storage_offset()).copy_(g)
    return window(s, 0, b.numels[i])
