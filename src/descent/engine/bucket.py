"""A bucket: the params of one (group, device, dtype) and their state in flat buffers.

Each ``nn.Parameter`` stays the same Python object; its ``.data`` becomes a view of the
bucket's param buffer. State buffers are flat too, and ``optimizer.state[p]`` holds
views of them. Gradients stay where autograd (or the user) put them; see
:mod:`.grads` for how a step reads them. A param that cannot be re-homed (sparse,
overlapping, or memory something else can reach) gets a bucket of its own that runs the
same rule on the tensor itself; the DTensors of a group (FSDP2) share a sharded bucket.
"""

from __future__ import annotations

import array
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..rules.base import Chain, Host
from . import formats
from .formats import BLOCK, Format
from .kernels import Numbers
from .layout import (
    align,
    dense,
    dtensor_type,
    flat1d,
    home,
    homed,
    laid_out,
    staggered,
    tile,
    window,
)

_grad = operator.attrgetter("grad")
_eq = operator.eq
_data_ptr = Tensor.data_ptr

#: the Python array type codes of host buffer dtypes
_CODES = {torch.float32: "f", torch.float64: "d"}


class Bucket:
    """Storage and per-tensor bookkeeping for params of one device and dtype."""

    def __init__(
        self,
        params: list[Tensor],
        flat: bool,
        tiled: bool = False,
        sharded: bool = False,
        fmt: Format | None = None,
        seed: int = 0,
    ):
        """``tiled``: every param's gradient is a window of one shared buffer (see
        :func:`.layout.plan`); the param buffer mirrors that layout and the step reads the
        gradients in place, with no copy and ``p.grad`` left as it is.
        ``sharded``: DTensors laid out alike (FSDP2's shards of one group); their state
        lives in flat buffers of this rank's shards, exposed as DTensors like torch.optim's,
        and the step is one kernel per local shard with the numbers computed once.
        ``fmt``: how the state is stored (:mod:`.formats`; None: in the params' dtype);
        8-bit state starts every param at a block boundary, so no block spans two params.
        ``seed``: this bucket's stream of stochastic-rounding bits."""
        given = {id(p): k for k, p in enumerate(params)}
        if tiled:
            params = sorted(params, key=lambda p: p.grad.storage_offset())
        elif flat and not sharded:
            params = laid_out(params)
        self.params = params
        #: each param's position in the list the bucket was made from (the group's order,
        #: in which ``optimizer.state`` gets its entries, as torch.optim's does)
        self.rank = [given[id(p)] for p in params]
        self.flat = flat
        self.tiled = tiled
        self.sharded = sharded
        self.device = params[0].device
        self.dtype = params[0].dtype
        self.device_index = params[0].get_device()
        self.cpu = self.device.type == "cpu"
        #: the step's numbers, rewritten in place every step
        self.numbers = Numbers()
        self.fmt = fmt
        self.seed = seed
        #: 8-bit state: each buffer's block scales (signed absmax), by state name
        self.scales: dict[str, Tensor] = {}
        self.unit = BLOCK if fmt is not None and fmt.state == "8bit" else 1
        #: 8-bit: a block's worth of gradient, for the last partial block of a param
        self.tail: Tensor | None = None
        n = len(params)
        self.numels = [p.numel() for p in params]
        self.shapes = [p.shape for p in params]
        self.state: dict[str, Tensor] = {}
        self.host: dict[str, Tensor] = {}
        #: the host buffers in one list, and the ``_version`` of each after descent last
        #: wrote it: an in-place edit of an exposed ``step`` (a view of it) shows as a
        #: newer version (lists, for the C++ look of a repeated step too)
        self.host_list: list[Tensor] = []
        self.host_seen: list[int] = []
        #: the memory of each host buffer as a Python array: a step writes its counts and
        #: the rule's host scalars there without a tensor op, and so without a new
        #: ``_version`` (which only the user's edits then change)
        self.memory: dict[str, array.array] = {}
        #: the host scalars kept in float32 (:class:`.Host`)
        self.narrow: set[str] = set()
        self.exposed = bytearray(n)
        #: per param: the ``optimizer.state`` entry and the tensors descent last put there
        self.published: list[tuple[dict, dict] | None] = [None] * n
        #: every param has the same host scalars (so the bucket runs as one)
        self.uniform = False
        #: the step count after the last whole-bucket run (None: read it from ``host``)
        self.t: float | None = None
        self._whole: dict[tuple[str, ...], tuple[Tensor, Tensor | None, list[Tensor]]] = {}
        self._pieces: dict[tuple, tuple[Tensor, Tensor, list[Tensor]]] = {}
        self._views: dict[tuple[str, int], Tensor] = {}
        #: kernels by (chain, statics, names, guard), so a step finds its kernel without hashing
        self.kernels: dict = {}
        #: how the step reads fresh gradients, by run (see :mod:`.grads`)
        self.plans: dict = {}
        self.staging: Tensor | None = None
        self.G: Tensor | None = None
        self.gviews: list[Tensor] = []
        self.gptrs: list[int] = []
        if sharded:
            self._init_sharded()
        if not flat:
            return
        kw = {"dtype": self.dtype, "device": self.device}
        if tiled:
            base = params[0].grad.storage_offset()
            self.starts = [p.grad.storage_offset() - base for p in params]
            end = self.starts[-1] + params[-1].numel()
            G = params[0].grad.new_empty(0).set_(params[0].grad.untyped_storage(), base, (end,), (1,))
        else:
            self.starts = []
            end = 0
            for p in params:
                self.starts.append(end)
                end = self._align(end + p.numel())
        self.size = end
        self.ends = [a + p.numel() for a, p in zip(self.starts, params)]
        # Param by param into a buffer whose pages are touched only as each arrives: each
        # param's old memory is freed as soon as it has moved, so the move holds one param
        # twice at a time, not all of them (a full-buffer fill first made a 50 M-param
        # model's first step peak 190 MB above every later one). Gaps are zeroed.
        self.P = staggered(end, 0, None, **kw)
        done = 0
        for i, p in enumerate(params):
            if self.starts[i] > done:
                window(self.P, done, self.starts[i]).zero_()
            v = self.view(self.P, i)
            v.copy_(p.detach())
            p.data = v
            home(p, self.P)
            done = max(done, self.ends[i])
        if end > done:
            window(self.P, done, end).zero_()
        self.ptrs = [p.data_ptr() for p in params]
        if tiled:
            self._use_grads(G, [p.grad for p in params])

    def _init_sharded(self) -> None:
        self.locals = [p.to_local() for p in self.params]
        #: per param: the local shard last seen and its 1-D window (None: not dense)
        self._seen: list[tuple[Tensor, Tensor | None] | None] = [None] * len(self.params)
        self.starts = []
        end = 0
        for loc in self.locals:
            self.starts.append(end)
            end = self._align(end + loc.numel())  # 8-bit: each shard starts a block
        self.size = end
        self.ends = [a + loc.numel() for a, loc in zip(self.starts, self.locals)]
        self.device = self.locals[0].device
        #: each state buffer's 1-D window per param (8-bit: codes)
        self.windows: dict[str, list[Tensor]] = {}
        if self.fmt is None:
            return
        #: where each local shard starts if the bucket's whole params lay end to end: the
        #: position stochastic rounding hashes (the same on every world size)
        self.offsets = []
        before = 0
        for p in self.params:
            self.offsets.append(before + _global_offset(p))
            before += p.numel()
        if self.unit > 1:
            #: 8-bit: each param's block scales take the most blocks any rank's shard has
            #: (:func:`most_blocks`), so every rank's scales are one row of a DTensor
            self.most = [most_blocks(p) for p in self.params]
            self.sstarts = [0]
            for m in self.most:
                self.sstarts.append(self.sstarts[-1] + m)
            for i, loc in enumerate(self.locals):
                if not dense(loc):
                    raise ValueError(
                        f"state_dtype='8bit' needs each shard of a sharded param laid out densely; "
                        f"this rank's shard of the param of shape {tuple(self.params[i].shape)} has "
                        f"strides {loc.stride()}"
                    )
        #: the scales' windows per param (8-bit), as the kernel takes them
        self.swindows: dict[str, list[Tensor]] = {}

    def _align(self, n: int) -> int:
        n = align(n)
        return -(-n // self.unit) * self.unit

    # -- views ---------------------------------------------------------------------------
    def view(self, flat: Tensor, i: int) -> Tensor:
        p = self.params[i]
        return flat.as_strided(p.shape, p.stride(), flat.storage_offset() + self.starts[i])

    def state_view(self, name: str, i: int) -> Tensor:
        """Param ``i``'s ``name`` state as torch.optim shapes it (one object per buffer)."""
        key = (name, i)
        v = self._views.get(key)
        if v is None:
            if self.sharded:
                v = self._sharded_view(name, i)
            else:
                v = self.view(self.state[name], i) if self.flat else self.state[name]
            self._views[key] = v
        return v

    def pwindow(self, i: int) -> Tensor:
        """Param ``i`` as a 1-D window over its memory in the param buffer."""
        return self._window("", i)

    def swindow(self, name: str, i: int) -> Tensor:
        """Param ``i``'s ``name`` state as a 1-D window, element for element with :meth:`pwindow`."""
        return self._window(name, i)

    def scale_view(self, name: str, i: int) -> Tensor:
        """Param ``i``'s 8-bit block scales for state ``name`` (1-D, one per block; a
        sharded param's as a DTensor with one row per shard, see :meth:`_sharded_scales`)."""
        key = (name + formats.SCALE_SUFFIX, i)
        v = self._views.get(key)
        if v is None:
            if self.sharded:
                v = self._views[key] = self._sharded_scales(name, i)
            else:
                lo, hi = self.starts[i] // BLOCK, -(-self.ends[i] // BLOCK)
                v = self._views[key] = window(self.scales[name], lo, hi)
        return v

    def local_scales(self, name: str, i: int) -> Tensor:
        """This rank's block scales of param ``i`` (sharded buckets: its whole row,
        padding included)."""
        if not self.sharded:
            return self.scale_view(name, i)
        return window(self.scales[name], self.sstarts[i], self.sstarts[i + 1])

    def _sharded_scales(self, name: str, i: int) -> Tensor:
        """A sharded param's block scales as a DTensor with one row per shard: of shape
        ``(n₁, …, most)`` for the ``n₁ …`` shards along each mesh dimension that shards the
        param, sharded over those (replicated over the others); row ``c`` holds shard
        ``c``'s blocks' scales, then padding up to :func:`most_blocks`. An evenly sharded
        DTensor: ``torch.distributed.checkpoint`` saves and loads every rank's row."""
        from torch.distributed.tensor import Replicate, Shard

        p = self.params[i]
        mesh = p.device_mesh
        row = self.local_scales(name, i)
        dims = [d for d, pl in enumerate(p.placements) if pl.is_shard()]
        placements = tuple(
            Shard(dims.index(d)) if d in dims else Replicate() for d in range(len(p.placements))
        )
        shape = (*(mesh.size(d) for d in dims), row.numel())
        local = row.view(*([1] * len(dims)), row.numel())
        stride = torch.empty(shape, device="meta").stride()
        return dtensor_type().from_local(local, mesh, placements, run_check=False, shape=shape, stride=stride)

    def bufs(self, names: Sequence[str], lo: int, hi: int) -> list[Tensor]:
        """The kernel's state buffers over elements ``lo:hi`` (8-bit: codes, then scales)."""
        out = []
        for k in names:
            out.append(window(self.state[k], lo, hi))
            if self.unit > 1:
                out.append(window(self.scales[k], lo // BLOCK, -(-hi // BLOCK)))
        return out

    def fill_state(self, name: str, i: int, value: float) -> None:
        """Param ``i``'s state ``name`` set to ``value`` everywhere."""
        if self.unit == 1:
            self.state_view(name, i).fill_(value)
            return
        code, scale = formats.encode(torch.full((1,), float(value)))
        self.swindow(name, i).fill_(int(code[0]))
        self.local_scales(name, i).fill_(float(scale[0]))

    def load_state(self, name: str, i: int, values: Tensor) -> None:
        """Param ``i``'s state ``name`` from ``values`` (the param's shape, any float
        dtype; a sharded param's as a DTensor sharded like it): rounded to the buffer's
        dtype, or encoded in 8-bit blocks."""
        view = self.state_view(name, i)
        if self.sharded:
            view, values = view.to_local(), _local_like(values, self.params[i], name)
        if self.unit == 1:
            view.copy_(values)
            return
        # blocks run over the param's memory order: lay the values out as the param is
        tmp = torch.empty_strided(view.shape, view.stride(), dtype=torch.float32, device=view.device)
        tmp.copy_(values)
        codes, scales = formats.encode(window(tmp, 0, tmp.numel()))
        self.swindow(name, i).copy_(codes)
        self.local_scales(name, i)[: scales.numel()].copy_(scales)

    def load_scales(self, name: str, i: int, scales: Tensor) -> None:
        """Param ``i``'s 8-bit block scales for state ``name`` from a checkpoint's (a
        sharded param's as the DTensor :meth:`scale_view` makes)."""
        want = self.scale_view(name, i)
        if self.sharded:
            got = _local_like(scales, want, name + formats.SCALE_SUFFIX)
            self.local_scales(name, i).copy_(got.reshape(-1))
        else:
            want.copy_(scales.reshape(-1))

    def _window(self, name: str, i: int) -> Tensor:
        key = ("/" + name, i)
        w = self._views.get(key)
        if w is None:
            buf = self.state[name] if name else self.P
            w = self._views[key] = window(buf, self.starts[i], self.ends[i])
        return w

    def _sharded_view(self, name: str, i: int) -> Tensor:
        p, loc, buf = self.params[i], self.locals[i], self.state[name]
        stride = loc.stride() if dense(loc) else torch.empty(loc.shape, device="meta").stride()
        local = buf.as_strided(loc.shape, stride, buf.storage_offset() + self.starts[i])
        return dtensor_type().from_local(
            local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )

    def _shard(self, i: int) -> tuple[Tensor, Tensor | None]:
        """This rank's shard of param ``i`` and its 1-D window (None: not dense), followed
        when the owner swaps the shard."""
        loc = self.params[i]._local_tensor
        seen = self._seen[i]
        if seen is None or seen[0] is not loc:  # first use, or the owner swapped the shard
            self.locals[i] = loc
            seen = self._seen[i] = (loc, window(loc, 0, loc.numel()) if dense(loc) else None)
        return seen

    def shards(self, a: int, b: int, names: Sequence[str]) -> list[tuple[Tensor, Tensor, list[Tensor]]]:
        """Sharded buckets: what the kernel updates for each param of ``a..b-1``, as 1-D
        runs over this rank's shards where param, grad and state are laid out alike."""
        out = []
        dt = dtensor_type()
        for i in range(a, b):
            p = self.params[i]
            g = p.grad
            loc, flat = self._shard(i)
            if not loc.numel():
                continue
            gl = g._local_tensor if type(g) is dt and g._spec.placements == p._spec.placements else None
            alike = gl is not None and (gl.stride(), gl.dtype) == (loc.stride(), loc.dtype)
            if flat is not None and alike:
                out.append((flat, window(gl, 0, gl.numel()), [self.windows[k][i] for k in names]))
            else:  # laid out differently: the rule over the DTensors themselves
                out.append((p.data, g, [self.state_view(k, i) for k in names]))
        return out

    def stored_shards(self, a: int, b: int, names: Sequence[str]):
        """Sharded buckets with state in a format: ``(p, g, bufs, position, back)`` for
        each kernel call over params ``a..b-1`` — 1-D runs over this rank's shards (8-bit:
        codes then scales; whole blocks), ``position`` the run's first element in the
        param's row-major order. A shard's last partial 8-bit block runs on a copy padded
        with zeros (the shard is the owner's memory, nothing lies after it); ``back``:
        ``(shard's tail, copy)`` to write back after the call."""
        unit = self.unit
        for i in range(a, b):
            p = self.params[i]
            loc, pw = self._shard(i)
            n = loc.numel()
            if not n:
                continue
            if pw is None or n != self.ends[i] - self.starts[i]:
                raise RuntimeError(
                    f"descent: this rank's shard of the param of shape {tuple(p.shape)} changed its "
                    f"layout ({tuple(loc.shape)}, strides {loc.stride()}) since the optimizer took it; "
                    "state kept in a format needs the shard laid out as it was"
                )
            gl = _local_like(p.grad, p, "grad")
            if gl.stride() != loc.stride() or gl.dtype != loc.dtype:
                gl = torch.empty_strided(loc.shape, loc.stride(), dtype=loc.dtype, device=loc.device).copy_(
                    gl
                )
            gw = window(gl, 0, n)
            lo, pos = self.starts[i], self.offsets[i]
            if unit == 1:
                yield pw, gw, [self.windows[k][i] for k in names], pos, None
                continue
            body = n - n % unit
            if body:
                bufs = []
                for k in names:
                    bufs += [
                        window(self.state[k], lo, lo + body),
                        window(self.swindows[k][i], 0, body // unit),
                    ]
                yield window(pw, 0, body), window(gw, 0, body), bufs, pos, None
            if body < n:
                tp = torch.zeros(unit, dtype=loc.dtype, device=loc.device)
                tg = torch.zeros(unit, dtype=loc.dtype, device=loc.device)
                tp[: n - body].copy_(window(pw, body, n))
                tg[: n - body].copy_(window(gw, body, n))
                bufs = []
                nb = body // unit
                for k in names:
                    bufs += [
                        window(self.state[k], lo + body, lo + body + unit),
                        window(self.swindows[k][i], nb, nb + 1),
                    ]
                yield tp, tg, bufs, pos + body, (window(pw, body, n), window(tp, 0, n - body))

    def intact(self) -> bool:
        """Every param still lives in this bucket's buffer (nobody reassigned ``.data``)."""
        if self.sharded:  # the shards stay the owner's; shards() follows a swapped one
            return True
        return not self.flat or all(map(_eq, map(_data_ptr, self.params), self.ptrs))

    def retiled(self) -> bool:
        """The gradients now live in a shared buffer this bucket does not mirror (DDP
        rebuilt its buckets, or was wrapped around the model after the first step): worth a
        new layout, where reading them one by one every step would cost far more."""
        if not self.flat or not self.params:
            return False
        g = self.params[0].grad
        if g is None or g.layout is not torch.strided:
            return False
        if self.gviews and (g is self.gviews[0] or g.data_ptr() == self.gptrs[0]):
            return False
        if not g._is_view() and g.untyped_storage().nbytes() == g.numel() * g.element_size():
            return False  # a gradient of its own (backward's): not a window of a shared buffer
        shared = tile(self.params[0])
        if shared is None or (self.G is not None and shared == self.G.untyped_storage().data_ptr()):
            return False
        return all(tile(p) is not None for p in self.params)

    def taken(self) -> bool:
        """Some param left this buffer for another descent buffer."""
        own = self.P.untyped_storage().data_ptr() if self.flat else None
        return self.flat and any(homed(p) and p.untyped_storage().data_ptr() != own for p in self.params)

    # -- gradients kept in a flat buffer -------------------------------------------------
    def _use_grads(self, G: Tensor, views: list[Tensor]) -> None:
        self.G = G
        self.gviews = views
        self.gptrs = [v.data_ptr() for v in views]
        self._whole.clear()

    def hold_grads(self) -> None:
        """Give every param that has a gradient a zeroed view of one flat gradient buffer
        as its ``.grad`` (``zero_grad(set_to_none=False)``): backward then accumulates
        into the buffer and the step reads it in one pass."""
        if self.G is None:
            had = [p.grad is not None for p in self.params]
            for p in self.params:  # free the old gradients before the buffer takes their place
                p.grad = None
            G = staggered(self.size, 1, 0.0, dtype=self.dtype, device=self.device)
            self._use_grads(G, [self.view(G, i) for i in range(len(self.params))])
            for p, v, h in zip(self.params, self.gviews, had):
                if h:
                    p.grad = v
            return
        self.G.zero_()
        for p, v in zip(self.params, self.gviews):
            if p.grad is not None and p.grad is not v:
                p.grad = v

    def release_grads(self) -> None:
        """Drop the flat gradient buffer once no gradient lives in it any more."""
        if self.G is not None and not self.tiled:
            self._use_grads(None, [])  # type: ignore[arg-type]

    def grads_in_place(self) -> bool:
        """Every ``p.grad`` starts where its view of the gradient buffer does. The memory
        is what counts, not the object: ``p.grad.data = …`` and ``p.grad.set_(…)`` keep
        the object and move the memory; DDP's new view of its bucket is a new object over
        the same memory."""
        if not self.flat or self.G is None:
            return False
        try:
            return all(map(_eq, map(_data_ptr, map(_grad, self.params)), self.gptrs))
        except (TypeError, RuntimeError):  # a grad is None, or sparse (no data pointer)
            return False

    # -- buffers -------------------------------------------------------------------------
    def allocate(self, name: str, fill: float) -> Tensor:
        if self.dtype.is_complex:
            fill = complex(fill, fill)
        if self.fmt is not None and self.fmt.state is not None:
            dtype = formats.storage_dtype(self.fmt, self.dtype)
            k = 2 + len(self.state)
            if self.unit > 1:  # 8-bit: codes of the fill value, and its scale in every block
                code, scale = formats.encode(torch.full((1,), float(fill)))
                n = self.sstarts[-1] if self.sharded else self.size // BLOCK
                self.scales[name] = staggered(n, k, float(scale[0]), torch.float32, self.device)
                fill = int(code[0])
            buf = staggered(self.size, k, fill, dtype=dtype, device=self.device)
        elif self.flat or self.sharded:
            buf = staggered(self.size, 2 + len(self.state), fill, dtype=self.dtype, device=self.device)
        else:
            buf = torch.full_like(self.params[0], fill, memory_format=torch.preserve_format)
        self.set_state(name, buf)
        return buf

    def set_state(self, name: str, buf: Tensor) -> None:
        self.state[name] = buf
        self._whole.clear()
        self._pieces.clear()
        self.plans.clear()
        dropped = (name, "/" + name, name + formats.SCALE_SUFFIX)
        self._views = {k: v for k, v in self._views.items() if k[0] not in dropped}
        if self.sharded:
            self.windows[name] = [window(buf, a, a + loc.numel()) for a, loc in zip(self.starts, self.locals)]
            if self.unit > 1:
                self.swindows[name] = [
                    window(self.scales[name], lo, lo + -(-loc.numel() // BLOCK))
                    for lo, loc in zip(self.sstarts, self.locals)
                ]

    def allocate_host(self, name: str, value: float, dtype: torch.dtype) -> Tensor:
        """Host scalar ``name`` of every param, set to ``value``, in ``dtype``
        (:func:`.layout.host_dtype`); those not in float64 are rounded to float32 as they
        advance (:attr:`narrow`)."""
        code = _CODES[dtype]
        # a tensor over a Python array's memory (kept alive by it)
        memory = array.array(code, [value]) * len(self.params)
        buf = torch.frombuffer(memory, dtype=dtype) if self.params else torch.empty(0, dtype=dtype)
        self.memory[name] = memory
        if dtype == torch.float64:
            self.narrow.discard(name)
        else:
            self.narrow.add(name)
        self.host[name] = buf
        self.host_written()
        self.t = None
        return buf

    def host_edited(self) -> bool:
        """A host scalar (``step`` …) was written through ``optimizer.state`` since the
        last step: a view of the buffer edited in place (``state[p]["step"] += 1``)."""
        for buf, seen in zip(self.host_list, self.host_seen):  # noqa: SIM110 (cheaper than a generator)
            if buf._version != seen:
                return True
        return False

    def host_values(self, chain: Chain, group: Mapping[str, Any], t: float, i: int = 0) -> dict[str, Any]:
        """The host scalars of step ``t`` of param ``i`` and those that share its scalars:
        ``step`` and the rule's, advanced from the ones held (:meth:`.Chain.advance`),
        rounded to their dtypes. Nothing is written (:meth:`write_host`)."""
        names = chain.host
        if len(names) == 1:
            return {"step": t}
        memory = self.memory
        host = Host({k: memory[k][i] for k in names[1:]}, self.narrow)
        chain.advance(group, t, host)
        return {"step": t, **host.rounded()}

    def write_host(self, values: Mapping[str, Any], a: int, c: int) -> None:
        """Host scalars ``values`` (named as ``host``) written for params ``a..c-1`` as
        descent's own, into the buffers' memory (no new ``_version``)."""
        memory = self.memory
        for k, v in values.items():
            m = memory[k]
            if c - a == 1:
                m[a] = v
            else:
                m[a:c] = array.array(m.typecode, [v]) * (c - a)

    def write_host_at(self, values: Mapping[str, Any], indices: Sequence[int]) -> None:
        """:meth:`write_host` for params ``indices`` (in any order, not a range)."""
        memory = self.memory
        for k, v in values.items():
            m = memory[k]
            for i in indices:
                m[i] = v

    def host_written(self) -> None:
        """Record the host buffers' versions after descent's own writes."""
        self.host_list = list(self.host.values())
        self.host_seen = [buf._version for buf in self.host_list]

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

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Flat element range of params ``a..b-1`` (padding included, aligned)."""
        return self.starts[a], min(self._align(self.ends[b - 1]), self.size)

    def tensors(self, a: int, b: int, names: Sequence[str]) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """Param buffer, gradient buffer (None without one) and state buffers (in ``names``
        order) over params ``a..b-1``, as 1-D windows."""
        whole = a == 0 and b == len(self.params)
        if whole:
            out = self._whole.get(tuple(names))
            if out is not None:
                return out
        lo, hi = (0, self.size) if whole else self.span(a, b)
        G = None if self.G is None else window(self.G, lo, hi)
        out = window(self.P, lo, hi), G, self.bufs(names, lo, hi)
        if whole:
            self._whole[tuple(names)] = out
        return out

    def staged(self, lo: int, hi: int, names: Sequence[str]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Param buffer, staging buffer and state buffers over elements ``lo..hi-1``, as
        1-D windows (made once: a chunk of staged gradients recurs every step)."""
        key = (lo, hi, tuple(names))
        out = self._pieces.get(key)
        if out is None:
            out = (
                window(self.P, lo, hi),
                window(self.staging, 0, hi - lo),
                self.bufs(names, lo, hi),
            )
            self._pieces[key] = out
        return out

    def alone(self, i: int, names: Sequence[str]) -> tuple[Tensor, list[Tensor]]:
        """Param ``i`` and its state buffers (in ``names`` order) as 1-D windows."""
        key = (i, tuple(names))
        out = self._pieces.get(key)
        if out is None:
            out = self._pieces[key] = self.pwindow(i), [self.swindow(k, i) for k in names]
        return out

    def single(self, names: Sequence[str], g: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """A bucket of one param that keeps its storage: its tensors, 1-D where alike."""
        return flat1d(self.params[0].data, g, [self.state[k] for k in names])


def _global_offset(p: Tensor) -> int:
    """Where this rank's shard of DTensor ``p`` starts in ``p``'s row-major order."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    stride = torch.empty(p.shape, device="meta").stride()
    return sum(o * st for o, st in zip(offset, stride))


def first_rows(p: Tensor) -> tuple[int, int]:
    """The rows (along dim 0) of DTensor ``p`` this rank's shard holds: ``(first, count)``.
    ``ValueError`` unless ``p`` is sharded along dim 0 alone (FSDP2's ``Shard(0)``, on a
    1-D mesh or HSDP's 2-D one)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    dims = {pl.dim for pl in p.placements if pl.is_shard()}
    if dims != {0} or sum(pl.is_shard() for pl in p.placements) != 1:
        raise ValueError(
            f"descent: 8-bit state saved on another sharding is read back along dim 0 (FSDP2's "
            f"Shard(0)); this param of shape {tuple(p.shape)} is placed as {tuple(map(str, p.placements))}"
        )
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return int(offset[0]), int(shape[0])


def most_blocks(p: Tensor) -> int:
    """The most 8-bit blocks any rank's shard of DTensor ``p`` holds: DTensor shards a
    dimension as ``torch.chunk`` does, so the first shard along it is the largest."""
    shape = list(p.shape)
    for d, pl in enumerate(p.placements):
        if pl.is_shard():
            dim = pl.dim
            shape[dim] = -(-shape[dim] // p.device_mesh.size(d))
    n = 1
    for s in shape:
        n *= s
    return max(1, -(-n // BLOCK))


def _local_like(t: Tensor | None, like: Tensor, what: str) -> Tensor:
    """This rank's part of ``t`` where ``like`` (a DTensor) has its shard: ``t`` as a
    DTensor placed like ``like`` (redistributed if it is placed otherwise), or a plain
    tensor of the shard's shape."""
    dt = dtensor_type()
    if t is None:
        raise RuntimeError(f"descent: no {what} for a sharded param of shape {tuple(like.shape)}")
    if type(t) is dt:
        if t.shape != like.shape:
            raise ValueError(
                f"{what} has shape {tuple(t.shape)}, but the sharded state has shape {tuple(like.shape)}"
            )
        if t.placements != like.placements or t.device_mesh != like.device_mesh:
            t = t.redistribute(like.device_mesh, like.placements)
        return t.to_local()
    local = like.to_local()
    if tuple(t.shape) != tuple(local.shape):
        raise ValueError(
            f"{what} is a plain tensor of shape {tuple(t.shape)}; for a sharded param give a "
            f"DTensor placed like it, or this rank's part (shape {tuple(local.shape)})"
        )
    return t
