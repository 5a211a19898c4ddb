"""Flat storage: the params of one (group, device, dtype) in one contiguous buffer.

Each ``nn.Parameter`` stays the same Python object; its ``.data`` becomes a view of the
bucket's buffer and its ``.grad`` a view of a matching gradient buffer, so backward
accumulates in place and the step reads one buffer. State buffers are flat too, and
``optimizer.state[p]`` holds views of them. A param that cannot be re-homed (sparse,
overlapping, or memory something else can reach) gets a bucket of its own that runs the
same rule on the tensor itself; the DTensors of a group (FSDP2) share a sharded bucket.
"""

from __future__ import annotations

import operator
import sys
from collections import Counter
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .errors import SparseGradient

#: Params start at multiples of this many elements: aligned vector loads, and every run
#: of the compiled kernel has a length divisible by it.
ALIGN = 16

#: Every param descent has re-homed, with the storage it put it in. A param still in that
#: storage lives in a descent buffer (this optimizer's, another's, or one whose optimizer
#: is gone) and may move freely into a new one; a param whose ``.data`` was set to
#: something else since is judged like any other.
_homes: WeakIdKeyDictionary = WeakIdKeyDictionary()

_grad = operator.attrgetter("grad")
_eq = operator.eq
_data_ptr = Tensor.data_ptr
_numel = Tensor.numel


def _check_grad(who: str, where: str, p: Tensor, g: Tensor) -> None:
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


def scalar_dtype() -> torch.dtype:
    """torch.optim's dtype for per-tensor scalars such as ``step``."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


#: Bytes between the starting offsets (modulo a page) of one bucket's buffers.
STAGGER = 576


def staggered(n: int, k: int, fill: float | complex, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A buffer of ``n`` elements filled with ``fill``, the ``k``-th of its bucket. Large
    allocations all start at the same offset within a page, so the step's streams (p, g,
    each state) would hit the same cache sets at every element (4K aliasing); starting
    buffer ``k`` at ``k·576`` bytes past that measured 23 % off a 32 M-element Adam step
    on the 2-core CPU machine (17.3 → 13.3 ms)."""
    elem = torch.empty((), dtype=dtype).element_size()
    off = _align((k * STAGGER) // elem)
    return torch.full((n + off,), fill, dtype=dtype, device=device)[off:]


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _dense(t: Tensor) -> bool:
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


def homed(p: Tensor) -> bool:
    """Whether ``p`` lives in a buffer descent made."""
    return _homes.get(p) == p.untyped_storage().data_ptr()


#: References to a storage held by a param nothing else aliases: the param's own tensor
#: and the storage object asked.
_ALONE = 2


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


def flattenable(p: Tensor) -> bool:
    """Whether ``p`` can be re-homed into a flat buffer without changing what it shares."""
    if not _plain(p) or p.layout != torch.strided or p.device.type == "meta" or not _dense(p):
        return False
    return homed(p) or alone(p)


def _tile(p: Tensor) -> int | None:
    """The storage ``p.grad`` is a window of, when the gradient lives in a buffer shared
    with other gradients (DDP's ``gradient_as_bucket_view``, a gradient arena) laid out
    like ``p``: the bucket then reads the gradients where they are."""
    g = p.grad
    if g is None or type(g) is not torch.Tensor or g.layout != torch.strided or g.dtype != p.dtype:
        return None
    if g.device != p.device or g.shape != p.shape or g.stride() != p.stride():
        return None
    if not g.numel() or not _dense(g):
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


def plan(params: Sequence[Tensor], flat: bool) -> list[tuple[list[Tensor], bool, bool, bool]]:
    """Split one group's params into buckets: ``(params, is_flat, grads_in_a_shared_buffer,
    sharded)``."""
    candidates = [p for p in params if flattenable(p)] if flat else []
    owners = Counter(p.untyped_storage().data_ptr() for p in candidates if p.numel())
    chosen = {
        id(p) for p in candidates if not p.numel() or homed(p) or owners[p.untyped_storage().data_ptr()] == 1
    }
    buckets: dict[tuple, list[Tensor]] = {}
    shards: dict[tuple, list[Tensor]] = {}
    singles: list[tuple[list[Tensor], bool, bool, bool]] = []
    for p in params:
        if id(p) in chosen:
            buckets.setdefault((p.device, p.dtype, _tile(p)), []).append(p)
        elif (key := _shard_key(p)) is not None:  # never moved, so flat=False or not
            shards.setdefault(key, []).append(p)
        else:
            singles.append(([p], False, False, False))
    out: list[tuple[list[Tensor], bool, bool, bool]] = []
    plain: dict[tuple, list[Tensor]] = {}
    for (device, dtype, tile), ps in buckets.items():
        if tile is not None and _disjoint(ps):
            out.append((ps, True, True, False))
        else:
            plain.setdefault((device, dtype), []).extend(ps)
    out += [(ps, True, False, False) for ps in plain.values()]
    return out + [(ps, False, False, True) for ps in shards.values()] + singles


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel sees for params of ``dtype`` (complex as real pairs)."""
    return dtype.to_real() if dtype.is_complex else dtype


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


class Bucket:
    """Storage and per-tensor bookkeeping for params of one device and dtype."""

    def __init__(self, params: list[Tensor], flat: bool, tiled: bool = False, sharded: bool = False):
        """``tiled``: every param's gradient is a window of one shared buffer (see
        :func:`plan`); the param buffer mirrors that layout and the step reads the
        gradients in place, with no copy and ``p.grad`` left as it is.
        ``sharded``: DTensors laid out alike (FSDP2's shards of one group); their state
        lives in flat buffers of this rank's shards, exposed as DTensors like torch.optim's,
        and the step is one kernel per local shard with the numbers computed once."""
        if tiled:
            params = sorted(params, key=lambda p: p.grad.storage_offset())
        self.params = params
        self.flat = flat
        self.tiled = tiled
        self.sharded = sharded
        self.device = params[0].device
        self.dtype = params[0].dtype
        n = len(params)
        self.state: dict[str, Tensor] = {}
        self.host: dict[str, Tensor] = {}
        self.exposed = bytearray(n)
        #: every param has the same host scalars (so the bucket runs as one)
        self.uniform = False
        #: the step count after the last whole-bucket run (None: read it from ``host``)
        self.t: float | None = None
        self._whole: dict[tuple[str, ...], tuple[Tensor, Tensor, list[Tensor]]] = {}
        #: kernels by (chain, statics, names, guard), so a step finds its kernel without hashing
        self.kernels: dict = {}
        if sharded:
            self.locals = [p.to_local() for p in params]
            #: per param: the local shard last seen and its 1-D window (None: not dense)
            self._seen: list[tuple[Tensor, Tensor | None] | None] = [None] * n
            self.starts = []
            end = 0
            for loc in self.locals:
                self.starts.append(end)
                end = _align(end + loc.numel())
            self.size = end
            self.device = self.locals[0].device
            #: each state buffer's 1-D window per param
            self.windows: dict[str, list[Tensor]] = {}
        if not flat:
            return
        self.starts: list[int] = []
        kw = {"dtype": self.dtype, "device": self.device}
        if tiled:
            base = params[0].grad.storage_offset()
            self.starts = [p.grad.storage_offset() - base for p in params]
            end = self.starts[-1] + params[-1].numel()
            self.G = params[0].grad.new_empty(0).set_(params[0].grad.untyped_storage(), base, (end,), (1,))
        else:
            end = 0
            for p in params:
                self.starts.append(end)
                end = _align(end + p.numel())
            self.G = staggered(end, 1, 0.0, **kw)
        self.size = end
        self.ends = [a + p.numel() for a, p in zip(self.starts, params)]
        #: the gradient buffer holds nothing but these params' gradients
        self.own_grads = not tiled or sum(p.numel() for p in params) == end
        self.P = staggered(end, 0, 0.0, **kw)
        self.gviews = [p.grad if tiled else self.view(self.G, i) for i, p in enumerate(params)]
        for i, (p, gv) in enumerate(zip(params, self.gviews)):
            v = self.view(self.P, i)
            v.copy_(p.detach())
            grad = p.grad
            p.data = v
            _homes[p] = self.P.untyped_storage().data_ptr()
            if not tiled and grad is not None and grad.layout == torch.strided:
                gv.copy_(grad)
                p.grad = gv
        self.ptrs = [p.data_ptr() for p in params]
        self.gptrs = [gv.data_ptr() for gv in self.gviews]

    # -- views ---------------------------------------------------------------------------
    def view(self, flat: Tensor, i: int) -> Tensor:
        p = self.params[i]
        return flat.as_strided(p.shape, p.stride(), flat.storage_offset() + self.starts[i])

    def state_view(self, name: str, i: int) -> Tensor:
        if self.sharded:
            return self._sharded_view(name, i)
        return self.view(self.state[name], i) if self.flat else self.state[name]

    def _sharded_view(self, name: str, i: int) -> Tensor:
        p, loc, buf = self.params[i], self.locals[i], self.state[name]
        stride = loc.stride() if _dense(loc) else torch.empty(loc.shape, device="meta").stride()
        local = buf.as_strided(loc.shape, stride, buf.storage_offset() + self.starts[i])
        dt = _dtensor_type()
        return dt.from_local(
            local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )

    def pieces(self, a: int, b: int, names: Sequence[str]) -> list[tuple[Tensor, Tensor, list[Tensor]]]:
        """Sharded buckets: what the kernel updates for each param of ``a..b-1``, as 1-D
        runs over this rank's shards where param, grad and state are laid out alike."""
        out = []
        dt = _dtensor_type()
        for i in range(a, b):
            p = self.params[i]
            loc, g = p._local_tensor, p.grad
            seen = self._seen[i]
            if seen is None or seen[0] is not loc:  # first use, or the owner swapped the shard
                self.locals[i] = loc
                seen = self._seen[i] = (loc, _window(loc, 0, loc.numel()) if _dense(loc) else None)
            if not loc.numel():
                continue
            gl = g._local_tensor if type(g) is dt and g._spec.placements == p._spec.placements else None
            alike = gl is not None and (gl.stride(), gl.dtype) == (loc.stride(), loc.dtype)
            if seen[1] is not None and alike:
                out.append((seen[1], _window(gl, 0, gl.numel()), [self.windows[k][i] for k in names]))
            else:  # laid out differently: the rule over the DTensors themselves
                out.append((p.data, g, [self.state_view(k, i) for k in names]))
        return out

    def intact(self) -> bool:
        """Every param still lives in this bucket's buffer (nobody reassigned ``.data``)."""
        if self.sharded:  # the shards stay the owner's; pieces() follows a swapped one
            return True
        return not self.flat or all(map(_eq, map(_data_ptr, self.params), self.ptrs))

    def retiled(self) -> bool:
        """The gradients now live in another shared buffer (DDP rebuilt its buckets, or
        was wrapped around the model after the first step): worth a new layout, where
        copying them out every step would cost a pass and undo DDP's views."""
        if not self.flat or not self.params:
            return False
        g = self.params[0].grad
        if g is None or g.layout != torch.strided or g is self.gviews[0] or g.data_ptr() == self.gptrs[0]:
            return False
        tile = _tile(self.params[0])
        if tile is None or tile == self.G.untyped_storage().data_ptr():
            return False
        return all(_tile(p) is not None for p in self.params)

    def taken(self) -> bool:
        """Some param left this buffer for another descent buffer."""
        own = self.P.untyped_storage().data_ptr() if self.flat else None
        return self.flat and any(homed(p) and p.untyped_storage().data_ptr() != own for p in self.params)

    # -- gradients -----------------------------------------------------------------------
    def grads_in_place(self) -> bool:
        """Every ``p.grad`` still starts where its view of the gradient buffer does. The
        memory is what counts, not the object: ``p.grad.data = …`` and ``p.grad.set_(…)``
        keep the object and move the memory; DDP's new view of its bucket is a new object
        over the same memory."""
        if not self.flat:
            return False
        try:
            return all(map(_eq, map(_data_ptr, map(_grad, self.params)), self.gptrs))
        except (TypeError, RuntimeError):  # a grad is None, or sparse (no data pointer)
            return False

    def collect(self, who: str, name: Callable[[Tensor], str]) -> list[bool] | None:
        """Which params have a gradient; ``None`` means all, already in place.

        Fresh gradients (after ``zero_grad(set_to_none=True)`` and backward, or assigned
        by hand) are checked against their params, copied into the flat gradient buffer
        once and ``p.grad`` re-pointed at its view. Raises, naming the param, before
        anything is copied when a gradient is sparse or of another shape, dtype or device.
        """
        if self.grads_in_place():
            return None
        params = self.params
        grads = list(map(_grad, params))
        has = [g is not None for g in grads]
        if all(has):
            idx, given, mine = range(len(params)), grads, params
        else:
            idx = [i for i, h in enumerate(has) if h]
            given = [grads[i] for i in idx]
            mine = [params[i] for i in idx]
        # The bucket's params share one dtype and device: one set of (dtype, device, layout)
        # and the element counts catch every wrong gradient a copy would not refuse (one of
        # the same size and another shape fails in the copy below and is named there; a
        # lone param's is compared whole).
        kinds = {(g.dtype, g.device, g.layout) for g in given}
        if kinds - {(self.dtype, self.device, torch.strided)} or list(map(_numel, given)) != list(
            map(_numel, mine)
        ):
            self._check(who, name, given, mine)
        if not self.flat:
            if not self.sharded and given and given[0].shape != mine[0].shape:
                self._check(who, name, given, mine)
            return has
        gptrs, gviews = self.gptrs, self.gviews
        ptrs = list(map(_data_ptr, given))
        moves = [i for i, ptr in zip(idx, ptrs) if ptr != gptrs[i]]
        if len(moves) < len(given):  # same memory, perhaps a new tensor (DDP's bucket view)
            for i, g, ptr in zip(idx, given, ptrs):
                if ptr == gptrs[i] and g is not gviews[i]:
                    if g.stride() == params[i].stride():
                        gviews[i] = g
                    else:
                        moves.append(i)
        if moves:
            for i in moves:
                if gviews[i].data_ptr() != gptrs[i]:  # its memory was replaced by hand
                    gviews[i] = self.view(self.G, i)
            dst = [gviews[i] for i in moves]
            try:
                torch._foreach_copy_(dst, [grads[i] for i in moves])
            except RuntimeError:
                self._check(who, name, given, mine)
                raise
            for i, gv in zip(moves, dst):
                params[i].grad = gv
        return has

    @staticmethod
    def _check(who: str, name: Callable[[Tensor], str], given: Sequence[Tensor], mine: Sequence) -> None:
        for g, p in zip(given, mine):
            _check_grad(who, name(p), p, g)

    # -- buffers -------------------------------------------------------------------------
    def allocate(self, name: str, fill: float) -> Tensor:
        if self.dtype.is_complex:
            fill = complex(fill, fill)
        if self.flat or self.sharded:
            buf = staggered(self.size, 2 + len(self.state), fill, dtype=self.dtype, device=self.device)
        else:
            buf = torch.full_like(self.params[0], fill, memory_format=torch.preserve_format)
        self.state[name] = buf
        self._whole.clear()
        if self.sharded:
            self.windows[name] = [
                _window(buf, a, a + loc.numel()) for a, loc in zip(self.starts, self.locals)
            ]
        return buf

    def allocate_host(self, name: str, value: float, dtype: torch.dtype | None = None) -> Tensor:
        buf = torch.full((len(self.params),), value, dtype=dtype or scalar_dtype())
        self.host[name] = buf
        self.t = None
        return buf

    # -- runs ----------------------------------------------------------------------------
    def runs(self, has: list[bool] | None, names: Sequence[str]) -> list[tuple[int, int]]:
        """Maximal ranges of params that have grads and equal host scalars (step …)."""
        n = len(self.params)
        if has is None and self.uniform:
            return [(0, n)]
        columns = [self.host[k].tolist() for k in names]
        keys = list(zip(*columns))
        runs: list[tuple[int, int]] = []
        start = None
        for i in range(n + 1):
            ok = i < n and (has is None or has[i])
            if start is not None and (not ok or keys[i] != keys[start]):
                runs.append((start, i))
                start = None
            if ok and start is None:
                start = i
        return runs

    def _slice(self, lo: int, hi: int, names: Sequence[str]) -> tuple[Tensor, Tensor, list[Tensor]]:
        bufs = [_window(self.state[k], lo, hi) for k in names]
        return _window(self.P, lo, hi), _window(self.G, lo, hi), bufs

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Flat element range of params ``a..b-1`` (padding included, aligned)."""
        return self.starts[a], min(_align(self.ends[b - 1]), self.size)

    def tensors(self, a: int, b: int, names: Sequence[str]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """What the kernel updates for params ``a..b-1``: param, grad and state buffers
        (in ``names`` order), 1-D wherever their memory allows."""
        if self.flat and a == 0 and b == len(self.params):
            whole = self._whole.get(names)
            if whole is None:
                whole = self._whole[tuple(names)] = self._slice(0, self.size, names)
            return whole
        if self.flat:
            return self._slice(*self.span(a, b), names)
        p = self.params[0]
        return _flat1d(p.data, p.grad, [self.state[k] for k in names])


def _dtensor_type() -> type | None:
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def sharded(p: Tensor) -> bool:
    """Whether ``p`` is a DTensor (FSDP2, tensor parallel)."""
    dt = _dtensor_type()
    return dt is not None and isinstance(p, dt)


def _flat1d(p: Tensor, g: Tensor, bufs: list[Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One param's tensors as 1-D runs over their memory when they are dense and laid out
    alike (so element i of each is the same coordinate), else as they are (a DTensor
    here is one no sharded bucket takes, e.g. partial: the rule runs on it as it is)."""
    if sharded(p):
        return p, g, bufs
    ts = [_real(t) for t in (p, g, *bufs)]
    shape, stride = ts[0].shape, ts[0].stride()
    if all(t.shape == shape and t.stride() == stride for t in ts) and _dense(ts[0]):
        ts = [_window(t, 0, t.numel()) for t in ts]
    return ts[0], ts[1], ts[2:]


def _window(flat: Tensor, lo: int, hi: int) -> Tensor:
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
