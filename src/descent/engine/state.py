"""``optimizer.state`` and the flat buffers: who holds what, and edits between steps.

The state of a bucket's params lives in its flat buffers; ``optimizer.state[p]`` holds
views of them (one object per param and buffer), so ``state_dict()`` has torch.optim's
layout and an in-place edit of a view is an edit of the buffer. What the user does to the
mapping itself — a state tensor or ``step`` replaced, an entry deleted or cleared, a new
mapping assigned — is found at the next step (:meth:`StateKeeper.edited`: one counter
compared per step while the mapping is descent's :class:`~.tracked.TrackedState`, every
entry compared while it is not) and taken over exactly as torch.optim would use it: the
values go into the buffers, and the tensor the user assigned becomes a view of them, so it
keeps receiving the updates as torch.optim's would. Where that cannot be done the step
raises, naming the param and the key, before anything is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..rules.base import Chain
from . import formats
from .bucket import Bucket, _local_like, first_rows, most_blocks
from .formats import CODES_SUFFIX, SCALE_SUFFIX
from .layout import alone, dense, host_dtype
from .tracked import TrackedEntry, TrackedState, version


class StateEditError(RuntimeError):
    """An edit of ``optimizer.state`` that descent cannot carry out as torch.optim would."""


class StateKeeper:
    def __init__(self, state_step: bool):
        #: publish a per-param ``step`` (torch.optim does for every optimizer but SGD)
        self.state_step = state_step
        #: set by ``load_state_dict``: every bucket re-reads the state at the next step
        self.reload = False
        self._state: Any = None
        self._n: int | None = None
        #: some published entry is not an entry of the tracked mapping (a dict the user
        #: assigned): entries are compared at every step while so
        self._foreign = False

    # -- noticing edits ------------------------------------------------------------------
    def edited(self, state: Mapping) -> bool:
        """Whether ``state`` may have been edited since the last step."""
        if state is not self._state or self._n is None or self._foreign:
            return True
        return state.cell.n != self._n  # type: ignore[attr-defined]

    def settle(self, state: Mapping, buckets: Sequence[Bucket]) -> None:
        """Record what the step left, so the next one sees only the user's edits."""
        self._state = state
        self._n = version(state)
        for b in buckets:
            b.host_written()

    def absorb(self, state: Mapping, groups: Sequence[tuple[dict, Chain, list[Bucket]]]) -> None:
        """Take over every entry that differs from what descent last published."""
        foreign = type(state) is not TrackedState
        cell = getattr(state, "cell", None)
        for group, chain, buckets in groups:
            for b in buckets:
                for i, p in enumerate(b.params):
                    st = state.get(p)
                    pub = b.published[i]
                    if pub is None:
                        changed = bool(st)
                    else:
                        entry, values = pub
                        changed = (
                            st is not entry
                            or any(st.get(k) is not v for k, v in values.items())
                            # a float value given for 8-bit state
                            or (b.unit > 1 and any(k in st for k in chain.state))
                        )
                    if changed:
                        self.adopt_one(state, b, chain, group, i, edit=True)
                        pub = b.published[i]
                    if pub is not None and (type(pub[0]) is not TrackedEntry or pub[0].cell is not cell):
                        foreign = True
                b.uniform, b.t = False, None
        self._foreign = foreign

    # -- buffers and entries -------------------------------------------------------------
    def prepare(self, b: Bucket, chain: Chain, group: dict) -> bool:
        """Allocate the buffers ``chain`` needs that ``b`` lacks (the first step, or a
        flag such as ``amsgrad`` switched on); True when it allocated any."""
        grown = False
        for name in chain.host:
            if name not in b.host:
                b.allocate_host(name, chain.host_init(name), host_dtype(chain, name))
                grown = True
        for name in chain.state:
            if name not in b.state:
                b.allocate(name, chain.fill(name, group))
                grown = True
        return grown

    def adopt(self, state: Mapping, b: Bucket, chain: Chain, group: dict, fresh: bool) -> None:
        """Take over whatever ``state`` holds for ``b``'s params (a loaded checkpoint,
        AdaGrad's initial state, a buffer new to the chain): copy it into the buffers and
        publish views in its place."""
        for i in range(len(b.params)):
            self.adopt_one(state, b, chain, group, i, edit=False, fresh=fresh)
        b.uniform = False
        b.t = None

    def adopt_one(
        self, state: Mapping, b: Bucket, chain: Chain, group: dict, i: int, edit: bool, fresh: bool = False
    ) -> None:
        """Param ``i``'s entry into the buffers. ``edit``: the user changed it between
        steps, so an assigned tensor becomes a view of the buffer (it stays the state's
        tensor, as in torch.optim) rather than being copied and replaced."""
        p = b.params[i]
        st = state.get(p)
        dirty = bool(b.exposed[i]) and not fresh  # its slots hold an earlier state
        if not st:  # no state: it starts afresh at its next step, as torch.optim's would
            for k in chain.host:
                b.host[k][i] = chain.host_init(k)
            if dirty:
                for name in chain.state:
                    b.fill_state(name, i, chain.fill(name, group))
            b.exposed[i] = 0
            b.published[i] = None
            return
        chosen: dict[str, Any] = {}
        step = st.get("step")
        started = any(isinstance(st.get(k), Tensor) or _codes(st, k)[0] is not None for k in chain.state)
        for k in chain.host:
            value = step if k == "step" else st.get(k)
            if value is None:
                b.host[k][i] = float(started) if k == "step" else chain.host_init(k)
            else:
                chosen[k] = self._host(b, k, i, value, edit)
        for name in chain.state:
            codes, scales = _codes(st, name)
            view = b.state_view(name, i)
            if b.unit > 1:  # 8-bit state: float values quantized, or codes and block scales
                old = st.get(name)
                if isinstance(old, Tensor) and old is not codes:  # (a value under "exp_avg" wins)
                    _load_compact(b, name, i, old, None)
                elif codes is not None:
                    if codes is not view or scales is not b.scale_view(name, i):
                        _load_compact(b, name, i, codes, scales)
                elif dirty or not fresh:
                    b.fill_state(name, i, chain.fill(name, group))
                continue
            old = st.get(name)
            if codes is not None:  # an 8-bit checkpoint into full-precision state
                old = _decoded(b, i, codes, scales, view)
            if old is view:
                continue
            if isinstance(old, Tensor):
                if _homed(old, view):  # a tensor an earlier edit assigned, made a view of this slot
                    chosen[name] = old
                elif b.fmt is not None and old.dtype != view.dtype:
                    _load_compact(b, name, i, old, None)  # values taken, descent's views published
                else:
                    chosen[name] = self._take(b, name, i, old, edit)
            elif dirty or not fresh:  # a key the entry lacks starts from its initial value
                b.fill_state(name, i, chain.fill(name, group))
        self.expose(state, b, chain, i, chosen)

    def _host(self, b: Bucket, k: str, i: int, value: Any, edit: bool) -> Any:
        buf = b.host[k]
        b.host[k][i] = float(value)
        if not edit or not isinstance(value, Tensor):
            return None
        if _homed(value, buf[i]):  # assigned by an earlier edit and made a view of its slot
            return value
        if value.dim() == 0 and value.dtype == buf.dtype and value.device == buf.device and _own(value):
            value.set_(buf.untyped_storage(), buf.storage_offset() + i, (), ())
            return value
        return None  # another dtype or shared: its value is taken, descent's view published

    def _take(self, b: Bucket, name: str, i: int, old: Tensor, edit: bool) -> Tensor | None:
        view = b.state_view(name, i)
        if edit:
            _check_edit(b, name, i, old, view)
        if not b.flat and not b.sharded and edit:
            b.set_state(name, old)  # the param keeps its own storage: the tensor itself is the state
            return old
        view.copy_(old)
        if not edit or b.sharded:
            return None
        if not _own(old) or old.stride() != view.stride():
            raise StateEditError(
                f"optimizer.state[{_where(b, i)}][{name!r}] was replaced by a tensor that shares its "
                "memory with another tensor (or is laid out differently from the param); descent keeps "
                "state in its own buffers and could not update that memory in place as torch.optim "
                "would. Assign a tensor of its own (e.g. .clone()), or build the optimizer with flat=False"
            )
        old.set_(view.untyped_storage(), view.storage_offset(), view.shape, view.stride())
        return old

    def expose(self, state: Mapping, b: Bucket, chain: Chain, i: int, chosen: dict | None = None) -> None:
        """Publish param ``i``'s state in ``state`` as views of the buffers."""
        chosen = chosen or {}
        entries: dict[str, Any] = {}
        for k in chain.host if self.state_step else chain.host[1:]:
            mine = chosen.get(k)
            entries[k] = b.host[k][i] if mine is None else mine
        stale = []
        for name in chain.state:
            if b.unit > 1:  # 8-bit: the codes under a key of their own, never taken as numbers
                entries[name + CODES_SUFFIX] = b.state_view(name, i)
                entries[name + SCALE_SUFFIX] = b.scale_view(name, i)
                stale.append(name)
            else:
                mine = chosen.get(name)
                entries[name] = b.state_view(name, i) if mine is None else mine
                stale += (name + CODES_SUFFIX, name + SCALE_SUFFIX)
        b.exposed[i] = 1
        if not entries:  # plain SGD: torch.optim keeps no state at all
            b.published[i] = None
            return
        p = b.params[i]
        st = state.get(p)
        if st is None:
            st = state[p] if isinstance(state, defaultdict) else state.setdefault(p, {})  # type: ignore[attr-defined]
        for k in stale:  # the other format's keys of a value taken over
            dict.pop(st, k, None)
        dict.update(st, entries)  # descent's own write: not an edit to notice
        b.published[i] = (st, entries)
        if type(st) is not TrackedEntry or st.cell is not getattr(state, "cell", None):
            self._foreign = True


def _codes(st: Mapping, name: str) -> tuple[Tensor | None, Tensor | None]:
    """``st``'s 8-bit codes of state ``name`` with their block scales, or ``(None, None)``:
    under ``<name>.codes`` (how descent stores them), or as a uint8 tensor under ``name``
    itself (checkpoints of earlier versions)."""
    scales = st.get(name + SCALE_SUFFIX)
    codes = st.get(name + CODES_SUFFIX)
    if codes is None:
        old = st.get(name)
        legacy = isinstance(old, Tensor) and old.dtype == torch.uint8 and isinstance(scales, Tensor)
        codes = old if legacy else None
    return (codes, scales) if isinstance(codes, Tensor) else (None, None)


def _load_compact(b: Bucket, name: str, i: int, old: Tensor, scales: Tensor | None) -> None:
    """A state value into a compact buffer: 8-bit codes with their block ``scales`` as
    they are, any float tensor (a float32 checkpoint, an edit) rounded or quantized."""
    view = b.state_view(name, i)
    key = name + CODES_SUFFIX if old.dtype == torch.uint8 else name
    if tuple(old.shape) != tuple(view.shape):
        raise StateEditError(
            f"optimizer.state[{_where(b, i)}][{key!r}] has shape {tuple(old.shape)}, "
            f"but the param's state has shape {tuple(view.shape)}"
        )
    if old.dtype == torch.uint8:
        if b.unit == 1:
            raise StateEditError(
                f"optimizer.state[{_where(b, i)}][{key!r}] holds 8-bit codes, but this param keeps "
                f"{b.fmt.describe() if b.fmt else view.dtype} state; give float values, or the codes "
                f"with their block scales under {name + SCALE_SUFFIX!r}"
            )
        gathered = isinstance(scales, Tensor) and scales.dim() == 2 and not hasattr(scales, "to_local")
        if gathered and not b.sharded:
            # a gathered checkpoint of a sharded param (one row of scales per shard):
            # decoded shard by shard, encoded again in this bucket's blocks
            b.load_state(name, i, formats.decode_like(old.detach(), scales.detach()).to(view.device))
            return
        if b.sharded and isinstance(scales, Tensor):
            values = _resharded(b, i, old, scales, key)
            if values is not None:  # saved on another sharding: decoded, encoded in this one's blocks
                b.load_state(name, i, values)
                return
        want = b.scale_view(name, i)
        if not isinstance(scales, Tensor) or scales.numel() != want.numel():
            raise StateEditError(
                f"optimizer.state[{_where(b, i)}][{key!r}] holds 8-bit codes, but "
                f"{name + SCALE_SUFFIX!r} does not hold their {want.numel()} block scales"
            )
        if b.sharded:
            view.to_local().copy_(_local_like(old, b.params[i], key))
        else:
            view.copy_(old)
        b.load_scales(name, i, scales)
        return
    if not old.is_floating_point():
        raise StateEditError(
            f"optimizer.state[{_where(b, i)}][{key!r}] holds a {old.dtype} tensor; this optimizer "
            f"keeps it as {b.fmt.describe() if b.fmt else view.dtype} state and takes float values"
        )
    b.load_state(name, i, old)


def _decoded(b: Bucket, i: int, codes: Tensor, scales: Tensor, view: Tensor) -> Tensor:
    """8-bit ``codes`` with their block ``scales`` (a checkpoint's) as float values shaped
    like ``view`` (a sharded param's: a DTensor placed like it, decoded shard by shard,
    from this sharding's blocks or another's)."""
    if not b.sharded:
        return formats.decode_like(codes, scales).reshape(view.shape)
    p = b.params[i]
    values = _resharded(b, i, codes, scales, "codes")
    if values is None:
        local = _local_like(codes, p, "codes")
        rows = scales.to_local() if hasattr(scales, "to_local") else scales
        flat = local.reshape(-1)
        values = formats.decode(flat, rows.reshape(-1)[: formats.blocks(flat.numel())].float())
        values = values.reshape(local.shape)
    return type(view).from_local(
        values, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )


def _resharded(b: Bucket, i: int, codes: Tensor, scales: Tensor, key: str) -> Tensor | None:
    """This rank's float32 values of a sharded param's 8-bit state whose block ``scales``
    come from another sharding (another world size, one process, or a gathered
    checkpoint's rows): the codes of this rank's rows decoded in the blocks they were
    saved in (:func:`.formats.decode_rows`). None when the scales are this sharding's
    own: the DTensor of :meth:`.Bucket.scale_view`'s shape, or this rank's row of it.
    ``codes``: a DTensor like the param (placed any way), the whole tensor, or this
    rank's part."""
    p = b.params[i]
    mesh = p.device_mesh
    shards = [mesh.size(d) for d, pl in enumerate(p.placements) if pl.is_shard()]
    own = (*shards, most_blocks(p))
    if hasattr(scales, "full_tensor"):  # a DTensor: one row per shard of its sharding
        if tuple(scales.shape) == own:
            return None
        scales = scales.full_tensor()  # (every rank loads the same entries in the same order)
    elif tuple(scales.shape) == (*[1] * len(shards), own[-1]):
        return None  # this rank's row
    first, count = first_rows(p)
    if hasattr(codes, "full_tensor"):
        local = _local_like(codes, p, key)
    elif tuple(codes.shape) == tuple(p.shape):
        local = codes[first : first + count]
    else:
        local = _local_like(codes, p, key)
    return formats.decode_rows(local.detach(), scales.detach().to(local.device), p.shape[0], first)


def _homed(t: Tensor, view: Tensor) -> bool:
    """``t`` is a view of exactly ``view``'s memory (an assigned tensor descent re-homed).
    Plain tensors only: a wrapper (a DTensor's shard) has no memory of its own to compare."""
    return (
        type(t) is Tensor
        and type(view) is Tensor
        and t.data_ptr() == view.data_ptr() != 0
        and t.shape == view.shape
        and t.stride() == view.stride()
        and t.dtype == view.dtype
        and t.device == view.device
    )


def _own(t: Tensor) -> bool:
    """A plain dense tensor whose memory nothing else holds (so it can become a view)."""
    return type(t) is torch.Tensor and not t.requires_grad and dense(t) and alone(t)


def _where(b: Bucket, i: int) -> str:
    return f"<param of shape {tuple(b.params[i].shape)}>"


def _check_edit(b: Bucket, name: str, i: int, old: Tensor, view: Tensor) -> None:
    for what, got, want in (
        ("shape", tuple(old.shape), tuple(view.shape)),
        ("dtype", old.dtype, view.dtype),
        ("device", old.device, view.device),
    ):
        if got != want:
            raise StateEditError(
                f"optimizer.state[{_where(b, i)}][{name!r}] was replaced by a tensor of {what} {got}, "
                f"but the param's state has {what} {want}; descent keeps state in the param's "
                f"{what} (torch.optim's load_state_dict casts it so too)"
            )
