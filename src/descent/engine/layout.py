"""Where params live: which can move into a flat buffer, and how a group's params split
into buckets.

A param moves into a descent buffer only when nothing else can reach its memory (it
fills its own storage, no other tensor holds that storage, it is not in CPU shared
memory) or it already lives in a descent buffer. Gradients that already share a buffer
laid out like their params (DDP's ``gradient_as_bucket_view``) make a *tiled* bucket
that mirrors that layout; the DTensors of a group (FSDP2) share a *sharded* bucket;
everything else runs alone.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from ..rules.base import Chain

#: Params start at multiples of this many elements: aligned vector loads, and every run
#: of the compiled kernel has a length divisible by it.
ALIGN = 16

#: A param at least this long has its gradient read where it lies when gradients are
#: fresh (one kernel call each, see :mod:`.grads`); shorter ones are staged together.
#: A flat bucket lays its short params out first, side by side, so the step stages them
#: in as few chunks as their total size allows instead of one chunk per gap between two
#: long ones (a transformer block's biases and norms sit between its matrices).
LARGE = 1 << 16


def laid_out(params: list[Tensor]) -> list[Tensor]:
    """The order of a flat bucket's params in its buffer: short ones first, then long ones,
    each in the order given."""
    return [p for p in params if p.numel() < LARGE] + [p for p in params if p.numel() >= LARGE]


#: Bytes between the starting offsets (modulo a page) of one bucket's buffers.
STAGGER = 576

#: Every param descent has re-homed, with the storage it put it in. A param still in that
#: storage lives in a descent buffer (this optimizer's, another's, or one whose optimizer
#: is gone) and may move freely into a new one; a param whose ``.data`` was set to
#: something else since is judged like any other.
_homes: WeakIdKeyDictionary = WeakIdKeyDictionary()

#: References to a storage held by a param nothing else aliases: the param's own tensor
#: and the storage object asked.
_ALONE = 2


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def scalar_dtype() -> torch.dtype:
    """torch.optim's dtype for per-tensor scalars such as ``step``."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def host_dtype(chain: Chain, name: str) -> torch.dtype:
    """The dtype a param's host scalar ``name`` (``step``, a rule's own) starts in:
    float64 for a transform's wide ones, else :func:`scalar_dtype`. Every place that
    makes one asks here; a scalar not in float64 is rounded to float32 as it advances
    (:class:`.Host`)."""
    return chain.host_dtype(name) or scalar_dtype()


def staggered(
    n: int, k: int, fill: float | complex | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """A buffer of ``n`` elements filled with ``fill``, the ``k``-th of its bucket. Large
    allocations all start at the same offset within a page, so the step's streams (p, g,
    each state) would hit the same cache sets at every element (4K aliasing); starting
    buffer ``k`` at ``k·576`` bytes past that measured 23 % off a 32 M-element Adam step
    on the 2-core CPU machine (17.3 → 13.3 ms). ``fill=None``: left unwritten (its pages
    are not touched, so not resident, until the caller writes them)."""
    elem = torch.empty((), dtype=dtype).element_size()
    off = align((k * STAGGER) // elem)
    if fill is None:  # left unwritten: the caller writes every element
        return torch.empty((n + off,), dtype=dtype, device=device)[off:]
    return torch.full((n + off,), fill, dtype=dtype, device=device)[off:]


def dense(t: Tensor) -> bool:
    """True when ``t`` covers exactly ``numel`` consecutive elements in some order."""
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _plain(p: Tensor) -> bool:
    return type(p) in (torch.Tensor, torch.nn.Parameter) and type(p.data) is torch.Tensor


def home(p: Tensor, storage: Tensor) -> None:
    """Record that ``p`` now lives in ``storage``, a buffer descent made."""
    _homes[p] = storage.untyped_storage().data_ptr()


def homed(p: Tensor) -> bool:
    """Whether ``p`` lives in a buffer descent made."""
    return _homes.get(p) == p.untyped_storage().data_ptr()


def _use_count(storage: torch.UntypedStorage) -> int | None:
    count = getattr(torch._C, "_storage_Use_Count", None)
    return None if count is None else count(storage._cdata)


def alone(p: Tensor) -> bool:
    """Whether nothing but ``p`` can reach its memory: it fills its storage, the storage
    is not in CPU shared memory (``share_memory()``, another process may hold it), and no
    other tensor holds it (a ``.data`` or ``state_dict()`` alias, a buffer the param is
    a view of, ZeroRedundancyOptimizer's bucket). Moving such a param leaves nobody
    looking at stale memory."""
    s = p.untyped_storage()
    if s.nbytes() != p.numel() * p.element_size():
        return False
    if p.device.type == "cpu" and s.is_shared():  # (CUDA storages always answer True)
        return False
    uses = _use_count(s)
    return uses is None or uses <= _ALONE


def held(p: Tensor) -> bool:
    """Whether ``p`` stays out of a flat buffer only because another tensor holds its
    memory (a ``state_dict()`` or ``.data`` alias): once that is gone, it can move
    (:func:`flattenable`). Shared memory and views of a larger storage never can."""
    if not _plain(p) or p.layout != torch.strided or p.device.type == "meta" or not dense(p) or homed(p):
        return False
    s = p.untyped_storage()
    if s.nbytes() != p.numel() * p.element_size() or (p.device.type == "cpu" and s.is_shared()):
        return False
    uses = _use_count(s)
    return uses is not None and uses > _ALONE


def flattenable(p: Tensor) -> bool:
    """Whether ``p`` can be re-homed into a flat buffer without changing what it shares."""
    if not _plain(p) or p.layout != torch.strided or p.device.type == "meta" or not dense(p):
        return False
    return homed(p) or alone(p)


def tile(p: Tensor) -> int | None:
    """The storage ``p.grad`` is a window of, when the gradient lives in a buffer shared
    with other gradients (DDP's ``gradient_as_bucket_view``, a gradient arena) laid out
    like ``p``: the bucket then reads the gradients where they are."""
    g = p.grad
    if g is None or type(g) is not torch.Tensor or g.layout != torch.strided or g.dtype != p.dtype:
        return None
    if g.device != p.device or g.shape != p.shape or g.stride() != p.stride():
        return None
    if not g.numel() or not dense(g):
        return None
    s = g.untyped_storage()
    return s.data_ptr() if s.nbytes() > g.numel() * g.element_size() else None


def _disjoint(ps: list[Tensor]) -> bool:
    spans = sorted((p.grad.storage_offset(), p.numel()) for p in ps)
    return all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:]))


def _shard_key(p: Tensor) -> tuple | None:
    """DTensors that can share a sharded bucket: same mesh, placements, dtype, none partial."""
    if not sharded(p) or p.layout != torch.strided or any(pl.is_partial() for pl in p.placements):
        return None
    return (id(p.device_mesh), p.placements, p.dtype)


#: A bucket to make: ``(params, is_flat, grads_in_a_shared_buffer, sharded)``.
Plan = tuple[list[Tensor], bool, bool, bool]


def plan(params: Sequence[Tensor], flat: bool, compact: str | None = None) -> list[Plan]:
    """Split one group's params into buckets. ``compact``: a compact state format
    (:mod:`.formats`); small params then get buckets of their own, which keep full
    precision, and 8-bit ones are never tiled (their blocks need aligned params)."""
    from .formats import MIN_NUMEL

    candidates = [p for p in params if flattenable(p)] if flat else []
    owners = Counter(p.untyped_storage().data_ptr() for p in candidates if p.numel())
    chosen = {
        id(p) for p in candidates if not p.numel() or homed(p) or owners[p.untyped_storage().data_ptr()] == 1
    }
    buckets: dict[tuple, list[Tensor]] = {}
    shards: dict[tuple, list[Tensor]] = {}
    singles: list[Plan] = []
    for p in params:
        # (a DTensor's whole size decides, so every rank makes the same buckets)
        big = compact is not None and p.numel() >= MIN_NUMEL
        if id(p) in chosen:
            tiled = None if big and compact == "8bit" else tile(p)
            buckets.setdefault((p.device, p.dtype, tiled, big), []).append(p)
        elif (key := _shard_key(p)) is not None:  # never moved, so flat=False or not
            shards.setdefault((*key, big), []).append(p)
        else:
            singles.append(([p], False, False, False))
    out: list[Plan] = []
    plain: dict[tuple, list[Tensor]] = {}
    for (device, dtype, tiled, big), ps in buckets.items():
        if tiled is not None and _disjoint(ps):
            out.append((ps, True, True, False))
        else:
            plain.setdefault((device, dtype, big), []).extend(ps)
    out += [(ps, True, False, False) for ps in plain.values()]
    return out + [(ps, False, False, True) for ps in shards.values()] + singles


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel sees for params of ``dtype`` (complex as real pairs)."""
    return dtype.to_real() if dtype.is_complex else dtype


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def dtensor_type() -> type | None:
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def sharded(p: Tensor) -> bool:
    """Whether ``p`` is a DTensor (FSDP2, tensor parallel)."""
    dt = dtensor_type()
    return dt is not None and isinstance(p, dt)


def flat1d(p: Tensor, g: Tensor, bufs: list[Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One param's tensors as 1-D runs over their memory when they are dense and laid out
    alike (so element i of each is the same coordinate), else as they are (a DTensor
    here is one no sharded bucket takes, e.g. partial: the rule runs on it as it is)."""
    if sharded(p):
        return p, g, bufs
    ts = [_real(t) for t in (p, g, *bufs)]
    shape, stride = ts[0].shape, ts[0].stride()
    if all(t.shape == shape and t.stride() == stride for t in ts) and dense(ts[0]):
        ts = [window(t, 0, t.numel()) for t in ts]
    return ts[0], ts[1], ts[2:]


def window(flat: Tensor, lo: int, hi: int) -> Tensor:
    """Elements ``lo:hi`` of a buffer's memory as a 1-D tensor of their own (complex as
    real pairs). Not an autograd view: a view would carry its base's size into the
    compiled kernel's guards, and a run over part of a bucket would then recompile."""
    base = flat.storage_offset()
    if flat.is_complex():
        flat = torch.view_as_real(flat)
        base, lo, hi = 2 * base, 2 * lo, 2 * hi
    out = flat.new_empty(0)
    out.set_(flat.untyped_storage(), base + lo, (hi - lo,), (1,))
    return out
