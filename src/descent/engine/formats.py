"""State formats: how a bucket stores its state, and stochastic rounding of its params.

A rule's ``apply`` always sees float32 (float64 for float64 params). A *format* decides
what the bytes in memory are; the kernel decodes what it loads and encodes what it
stores, in the same pass, so every byte is still read once and every rule — composed
ones included — gets every format without a line of its own.

``"bfloat16"``
    Each state buffer is bfloat16 (2 bytes an element), computed in float32 and written
    back with stochastic rounding, so an EMA whose per-step change is below half a
    bfloat16 ulp still moves on average instead of freezing.

``"8bit"``
    Each state buffer is one byte an element plus one float32 per block of
    :data:`BLOCK` elements (2.03 bytes a param for Adam's two buffers). A block stores
    its absmax ``a``; each element is a small float of ``a``'s scale with 3 mantissa
    bits, rounded to nearest. The block picks its map from its own values:

    - a block with a negative element: a sign bit and 4 exponent bits (magnitudes
      ``a`` down to ``a·2⁻¹⁸``, subnormals included), as a first moment needs;
    - a block of non-negative values (second moments, AdaGrad's sums, Adamax's max…):
      no sign bit, 5 exponent bits (down to ``a·2⁻³⁴``), and a positive value never
      rounds to zero (it reads as the smallest code instead): Adam's ``m/(√v + ε)``
      then never divides a kept first moment by a lost second moment, the failure that
      makes a plain 8-bit map blow up on rarely-seen coordinates.

    Why a float map rather than bitsandbytes' dynamic tree (a 256-entry table searched
    per element) or torchao's (the nearest of 256 codes by argmin: its 452 ms CPU step):
    encoding a small float is integer arithmetic on the float32 bits (add half an ulp,
    shift), so it costs a few vector ops, rounds identically eagerly and compiled, and
    needs no table. The sign of the stored absmax says which map a block uses
    (negative: signed).

Tensors under :data:`MIN_NUMEL` elements keep full-precision state (as bitsandbytes
and torchao do): they hold little memory, and biases and norms are where quantization
error costs most.

Stochastic rounding draws its bits from a counter-based hash of (seed, step, position),
not from torch's generator: two identical runs give the same bits, and eager and
compiled paths agree bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rules.base import Chain, Scalars
from .body import nonfinite, unpack

#: Elements per 8-bit block (one float32 absmax each), as torchao's and bitsandbytes' smaller block.
BLOCK = 256

#: Tensors with fewer elements keep their state in full precision.
MIN_NUMEL = 4096

#: The values ``state_dtype=`` accepts, by name.
STATE_DTYPES = ("bfloat16", "8bit")

#: The largest magnitude a code holds, relative to its block's scale (1.111 in binary).
_TOP = 1.875


@dataclass(frozen=True)
class Format:
    """How one bucket stores its state (``state``: None, ``"bfloat16"`` or ``"8bit"``) and
    whether its (bfloat16) params are written with stochastic rounding."""

    state: str | None = None
    sr: bool = False

    def describe(self) -> str:
        return "+".join(x for x in (self.state, "sr" if self.sr else None) if x)


@contextlib.contextmanager
def full_width() -> Iterator[None]:
    """While a kernel is generated: two changes to inductor's CPU code generator that keep
    a format's loops in full-width vectors. Neither changes what is computed (the tests
    compare the kernels with the eager path bit for bit); where inductor's internals
    differ (another torch) each one does nothing.

    - *The loop's step.* Inductor picks a fused loop's step from its first node: a loop
      that writes a float32 param and bfloat16 state steps by the float32 width (16 on
      AVX-512), so every bfloat16 load and store is half a vector, masked — measured 3.5×
      slower than the float32 loop it was meant to beat (one thread, Adam over 4 M
      elements with bfloat16 moments: 9.4 ms against 2.7). Stepping by the bfloat16
      width (32, float32 values then held in pairs of vectors), as inductor already does
      when every node is bfloat16: 2.3 ms.
    - *Bit casts* (``x.view(torch.int32)``: stochastic rounding, the 8-bit codes) have no
      vector form in inductor, which spills every vector to memory and copies it lane by
      lane. A same-width bit cast of a vector is a register reinterpretation
      (``at::vec::cast``): Adam with stochastically rounded bfloat16 moments, 11.6 → 4.0 ms.
    """
    try:
        from torch._inductor.codegen import cpp
        from torch._inductor.virtualized import V
    except ImportError:
        yield
        return
    undo = []
    tiling = getattr(cpp, "TilingSelect", None)
    lowp, bodies = getattr(cpp, "get_loop_body_lowp_fp", None), getattr(cpp, "_get_loop_body", None)
    if tiling is not None and lowp is not None and bodies is not None and hasattr(tiling, "select_tiling"):
        select = tiling.select_tiling

        def widest(self, fn_list, *args, **kwargs):
            try:
                found = {lowp(body)[0] for body in bodies(fn_list)} - {None}
            except Exception:  # another inductor's loop bodies: its own choice
                found = set()
            if len(found) != 1:
                return select(self, fn_list, *args, **kwargs)
            dtype = found.pop()
            cpp.get_loop_body_lowp_fp = lambda body: (dtype, False)  # (only the dtype is read here)
            try:
                return select(self, fn_list, *args, **kwargs)
            finally:
                cpp.get_loop_body_lowp_fp = lowp

        tiling.select_tiling = widest
        undo.append(lambda: setattr(tiling, "select_tiling", select))
    vec = getattr(cpp, "CppVecOverrides", None)
    names = getattr(cpp, "DTYPE_TO_CPP", None)
    if vec is not None and names is not None and "to_dtype_bitcast" in vars(vec):
        scalar = vars(vec)["to_dtype_bitcast"]

        def bitcast(x, dtype, src_dtype, *args, **kwargs):
            kernel = V.kernel
            plain = dtype.itemsize != src_dtype.itemsize or not getattr(x, "is_vec", False)
            if plain or args or kwargs or not hasattr(kernel, "_get_num_vectors") or dtype not in names:
                return scalar.__func__(x, dtype, src_dtype, *args, **kwargs)
            n, to = kernel._get_num_vectors(dtype), names[dtype]
            if n == 1:
                return f"at::vec::cast<{to}>({x})"
            return (
                f"[&]() {{ at::vec::VectorizedN<{to}, {n}> r; "
                f"for (int k = 0; k < {n}; ++k) r[k] = at::vec::cast<{to}>({x}[k]); return r; }}()"
            )

        vec.to_dtype_bitcast = staticmethod(bitcast)
        undo.append(lambda: setattr(vec, "to_dtype_bitcast", scalar))
    kernel_cls = getattr(cpp, "CppVecKernel", None)
    if kernel_cls is not None and "arange" in vars(kernel_cls) and hasattr(kernel_cls, "_get_vec_type"):
        arange = vars(kernel_cls)["arange"]

        def counted(self, index, stride, *args, **kwargs):
            try:
                vec = self._get_vec_type(index.dtype)
            except Exception:  # another inductor's kernel: its own code
                vec = None
            if vec is None or args or kwargs or getattr(index, "is_vec", False):
                return arange(self, index, stride, *args, **kwargs)
            csevar = self.cse.generate(self.compute, f"({vec}({index}) + {vec}::arange(0, {stride}))")
            csevar.dtype = index.dtype
            csevar.is_vec = True
            return csevar

        kernel_cls.arange = counted
        undo.append(lambda: setattr(kernel_cls, "arange", arange))
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


def parse_state_dtype(value: Any) -> str | None:
    """``state_dtype=`` as a format name; ``ValueError`` naming a value it does not know."""
    if value is None:
        return None
    if value == torch.bfloat16 or value in ("bfloat16", "bf16"):
        return "bfloat16"
    if value in ("8bit", "int8", "uint8"):
        return "8bit"
    raise ValueError(
        f"Invalid state_dtype: {value!r} (expected None for the param's dtype, 'bfloat16' or '8bit')"
    )


def for_bucket(state: str | None, sr: bool, numel: int, dtype: torch.dtype) -> Format | None:
    """The format of a flat bucket of params of ``dtype``, the smallest of ``numel``
    elements; None for the default (state in the param's dtype, nearest rounding)."""
    low = (torch.float32, torch.bfloat16, torch.float16)
    compact = state if numel >= MIN_NUMEL and dtype in low else None
    fmt = Format(compact, sr and dtype == torch.bfloat16)
    return None if fmt == Format() else fmt


def slots(fmt: Format | None) -> int:
    """Kernel buffers per state buffer: codes and block scales for 8-bit, else one."""
    return 2 if fmt is not None and fmt.state == "8bit" else 1


def storage_dtype(fmt: Format | None, dtype: torch.dtype) -> torch.dtype:
    if fmt is None or fmt.state is None:
        return dtype
    return torch.bfloat16 if fmt.state == "bfloat16" else torch.uint8


# -- counter-based random bits ----------------------------------------------------------
def i32(x: int) -> int:
    """``x`` as a signed 32-bit constant."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


_K1, _K2, _K3 = i32(0x9E3779B1), i32(0x7FEB352D), i32(0x846CA68B)


def hash32(pos: Tensor, key: Tensor) -> Tensor:
    """32 random bits for every ``pos`` (int32) under ``key`` (an int32 scalar, itself
    well mixed: :func:`step_key`): ``(pos ^ key) · K`` in wrapping int32 arithmetic.

    What stochastic rounding needs is that each element's bits are uniform at every step
    and independent from step to step; the mixing that buys it is done once a step on the
    host. XOR with a uniform key and multiplication by an odd constant are bijections of
    the 32-bit integers, so an element's bits are exactly uniform whenever its step's key
    is, and independent across steps whenever the keys are — its two 16-bit halves too,
    which is why one value rounds two buffers. The multiply spreads neighbouring positions
    apart (a Weyl sequence in the high bits). Measured on the 2-core CPU: the three-
    multiply finalizer this replaces (lowbias32) cost 0.7 ms of a 3.5 ms bfloat16-state
    AdamW step at 6.6 M params, and 2 ms at 51 M."""
    return (pos ^ key) * _K1


def subkey(key: Tensor, salt: int) -> Tensor:
    """A key of its own for buffer pair ``salt`` of a step whose key is ``key``: the
    multiply/xorshift finalizer of "lowbias32" (Wellons) on one scalar, in wrapping int32
    arithmetic with logical shifts spelled as arithmetic ones masked (computed once a
    kernel call, not per element), so the buffers' bits are independent of each other and
    of the params'."""
    x = key + i32(salt * _K1)
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _K2
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _K3
    return x ^ ((x >> 16) & 0xFFFF)


def step_key(seed: int, step: int, salt: int) -> int:
    """The int32 key of one buffer's noise at one step (mixed on the host)."""
    x = (seed * 0x85EBCA6B + step * 0xC2B2AE35 + salt * 0x27D4EB2F + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    return i32(x)


def round_bf16(x: Tensor, bits: Tensor) -> Tensor:
    """float32 ``x`` to bfloat16, rounded up in magnitude with probability equal to the
    dropped fraction (stochastic rounding): the low 16 bits of ``bits`` are added to the
    float's bits before truncation. Exact in both paths: integer arithmetic, and the
    truncated float is a bfloat16 value."""
    raw = x.view(torch.int32)
    y = ((raw + (bits & 0xFFFF)) & -65536).view(torch.float32)
    return torch.where(x != x, x, y).to(torch.bfloat16)  # (a NaN stays a NaN)


# -- 8-bit block codes ------------------------------------------------------------------
def blocks(n: int) -> int:
    """Blocks of ``n`` elements."""
    return (n + BLOCK - 1) // BLOCK


def _blocks(x: Tensor, nb: Any) -> Tensor:
    """``x`` as ``nb`` rows of a block each (zero-padded on the host; a kernel's runs are
    whole blocks: see :func:`.grads.piece`)."""
    n = x.shape[0]
    if not isinstance(nb, int) or nb * BLOCK == n:
        return x.reshape(nb, BLOCK)
    return F.pad(x, (0, nb * BLOCK - n)).reshape(nb, BLOCK)


def encode(x: Tensor, nb: Any = None) -> tuple[Tensor, Tensor]:
    """float32 ``x`` as (uint8 codes of x's shape, float32 signed absmax for each of its
    ``nb`` blocks): ``x`` 1-D, or already rows of a block each (a kernel's layout)."""
    if x.dim() == 2:
        return _encode(x)
    n = x.shape[0]
    codes, scales = _encode(_blocks(x, blocks(n) if nb is None else nb))
    return codes.reshape(-1)[:n], scales


def _encode(xb: Tensor) -> tuple[Tensor, Tensor]:
    a = xb.abs().amax(1)
    signed = xb.amin(1) < 0
    inv = torch.where(a > 0, _TOP * torch.reciprocal(a), torch.zeros_like(a))
    y = xb.abs() * inv[:, None]
    s = signed[:, None]
    si = s.to(torch.int32)
    # The map's constants are chosen per block (a scalar a row), then applied to every
    # element: one multiply or compare an element instead of both maps' and a select.
    # (Integer constants as int32 arithmetic, float ones as float32 tensors: the dtypes
    # stay int32 and float32 whatever torch's default dtype.)
    one = a[:, None].new_ones(())
    sub = torch.round(y * torch.where(s, one * 2.0**17, one * 2.0**33)).to(torch.int32)
    normal = ((y.view(torch.int32) + (1 << 19)) >> 20) - (768 + 128 * si)
    mag = torch.where(y < torch.where(s, one * 2.0**-14, one * 2.0**-30), sub, normal)
    mag = torch.minimum(mag, 255 - 128 * si)
    # an unsigned block never rounds a positive value to zero: a second moment too small
    # for the map reads as the smallest code, never as 0 under a first moment that is not
    # (every selected magnitude is ≥ 0, so the max is the identity elsewhere)
    mag = torch.maximum(mag, ((y > 0) & ~s).to(torch.int32))
    code = mag + 128 * (s & (xb < 0)).to(torch.int32)
    return code.to(torch.uint8), torch.where(signed, -a, a)


def decode(codes: Tensor, scales: Tensor) -> Tensor:
    """float32 values of ``codes`` under their blocks' ``scales``: ``codes`` 1-D, or rows
    of a block each (a kernel's layout, kept)."""
    if codes.dim() == 2:
        return _decode(codes, scales)
    n = codes.shape[0]
    return _decode(_blocks(codes, scales.shape[0]), scales).reshape(-1)[:n]


def decode_like(codes: Tensor, scales: Tensor) -> Tensor:
    """float32 values of ``codes`` of any shape, blocks running over their elements in
    order (a state tensor as ``optimizer.state`` or a checkpoint holds it). 2-D
    ``scales`` are a sharded param's, one row per shard, as a gathered checkpoint of
    FSDP2 holds them (``get_optimizer_state_dict(..., full_state_dict=True)``, or
    ``dcp_to_torch_save``): the shards are ``torch.chunk`` of dim 0, FSDP2's default
    ``Shard(0)``, each starting a block of its own (:func:`decode_rows`)."""
    if scales.dim() == 2 and codes.dim() >= 1 and codes.shape[0] > 0:
        return decode_rows(codes, scales, codes.shape[0], 0)
    return decode(codes.reshape(-1), scales.reshape(-1).float()).reshape(codes.shape)


def decode_rows(codes: Tensor, scales: Tensor, rows: int, first: int) -> Tensor:
    """float32 values of ``codes``, rows ``first …`` (along dim 0) of a tensor of ``rows``
    rows whose 8-bit blocks were laid shard by shard: ``scales`` has one row per shard
    (``scales.shape[0]`` shards of dim 0, cut as ``torch.chunk`` cuts them: FSDP2's
    ``Shard(0)``), and each shard starts a block of its own; 1-D ``scales`` are those of
    one shard, the whole tensor. ``codes`` may start and end anywhere in those shards:
    they are another sharding's part of the tensor (a checkpoint loaded on another world
    size), or the whole of it. ``ValueError`` when the codes do not fit the scales."""
    if scales.dim() == 1:
        scales = scales[None]
    if scales.dim() != 2 or codes.dim() == 0 or not 0 <= first <= first + codes.shape[0] <= rows:
        raise ValueError(
            f"8-bit codes of shape {tuple(codes.shape)} (rows {first}… of {rows}) do not fit block "
            f"scales of shape {tuple(scales.shape)} (one row per shard of dim 0)"
        )
    shards, most = scales.shape
    per = -(-rows // shards)  # rows a shard holds (torch.chunk; the last ones may hold fewer or none)
    width = codes[0].numel() if codes.shape[0] else 0  # elements a row
    flat = codes.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.float32, device=codes.device)
    last = first + codes.shape[0]
    for s in range(first // per, -(-last // per)):
        a, e = max(first, s * per), min(last, (s + 1) * per)
        if a >= e:
            continue
        at = (a - s * per) * width  # where the part starts in its shard
        lead = at % BLOCK
        part = flat[(a - first) * width : (e - first) * width]
        nb = blocks(lead + part.numel())
        if at // BLOCK + nb > most:
            raise ValueError(
                f"8-bit codes of shape {tuple(codes.shape)} (rows {first}… of {rows}) do not fit block "
                f"scales of shape {tuple(scales.shape)} (one row per shard of dim 0)"
            )
        if lead:  # the part starts inside a block: decoded from the block's start
            part = torch.cat([part.new_zeros(lead), part])
        row = scales[s, at // BLOCK : at // BLOCK + nb].float()
        out[(a - first) * width : (e - first) * width] = decode(part, row)[lead:]
    return out.reshape(codes.shape)


def _decode(cb: Tensor, scales: Tensor) -> Tensor:
    sc = scales[:, None]
    signed = sc < 0
    si = signed.to(torch.int32)
    c = cb.to(torch.int32)
    # (the map's constants chosen per block, as in _encode)
    mag = c & (255 - 128 * si)
    f = mag.to(torch.float32)
    one = sc.new_ones(())
    sub = f * torch.where(signed, one * 2.0**-17, one * 2.0**-33)
    normal = ((mag + (768 + 128 * si)) << 20).view(torch.float32)
    v = torch.where(mag < 8, sub, normal)
    v = torch.where(signed & (c >= 128), -v, v)
    return v * (sc.abs() / _TOP)


# -- a step in a format -----------------------------------------------------------------
def load(fmt: Format, bufs: Sequence[Tensor], compute: torch.dtype) -> list[Tensor]:
    """The state buffers of one piece as ``compute``-precision tensors."""
    if fmt.state == "8bit":  # rows of a block: the kernel's whole pass is per block
        return [decode(rows(bufs[i]), bufs[i + 1]) for i in range(0, len(bufs), 2)]
    return [b.to(compute) for b in bufs]


def rows(x: Tensor) -> Tensor:
    """A run of whole blocks as rows of a block each."""
    return x.view(-1, BLOCK)


def store(
    fmt: Format,
    bufs: Sequence[Tensor],
    values: Sequence[Tensor],
    pos: Tensor,
    key: Tensor,
    keep: Tensor | None,
) -> None:
    """Write ``values`` into the state buffers (``keep``: a flag that keeps them as they
    were): 8-bit codes and their block scales, or rounded values."""
    bits = None
    for j, v in enumerate(values):
        if fmt.state == "8bit":
            buf, old = rows(bufs[2 * j]), bufs[2 * j + 1]
            codes, sc = encode(v)
            if keep is not None:
                codes, sc = torch.where(keep, buf, codes), torch.where(keep, old, sc)
            buf.copy_(codes)
            old.copy_(sc)
        else:
            buf = bufs[j]
            if fmt.state == "bfloat16":
                # one 32-bit hash rounds two buffers: its low half the even one, its high
                # half the odd one
                if j % 2 == 0:
                    bits = hash32(pos, subkey(key, j // 2 + 1))
                new = round_bf16(v, bits if j % 2 == 0 else bits >> 16)
            else:
                new = v
            buf.copy_(new if keep is None else torch.where(keep, buf, new.to(buf.dtype)))


def write_param(fmt: Format, p: Tensor, value: Tensor, pos: Tensor, key: Tensor, keep: Tensor | None) -> None:
    new = round_bf16(value, hash32(pos, key)) if fmt.sr else value.to(p.dtype)
    p.copy_(new if keep is None else torch.where(keep, p, new))


class StoredStep(torch.nn.Module):
    """A kernel's body for state kept in a format (:class:`.body.Step`'s counterpart)."""

    def __init__(self, spec: Any):
        super().__init__()
        self.spec = spec

    def forward(self, p, g, scal, bufs, key):
        spec = self.spec
        hs = unpack(spec.statics, spec.names, scal.unbind())
        return stored(spec.chain, spec.fmt, hs, p, g, bufs, key, spec.guard)


def stored(
    chain: Chain,
    fmt: Format,
    hs: list[Scalars],
    p: Tensor,
    g: Tensor,
    bufs: list[Tensor],
    key: Tensor,
    guard: bool,
) -> Tensor | None:
    """The chain's update on state kept in ``fmt``: decoded on load, computed in float32
    (float64 for float64 params), encoded on store, in one pass. ``key``: the int32 pair
    (noise key of this step, position of the run's first element) that stochastic
    rounding hashes. Returns the flag ``bad`` with ``guard``."""
    compute = torch.float64 if p.dtype == torch.float64 else torch.float32
    pos = torch.arange(p.numel(), dtype=torch.int32, device=p.device) + key[1]
    if fmt.state == "8bit":  # every tensor as rows of a block: one pass, block by block
        # (a kernel is handed p and g as rows already: written back through a view, a 1-D
        # param made inductor index every element with a division and a modulo)
        p, g, pos = rows(p), rows(g), rows(pos)
    state = load(fmt, bufs, compute)
    bad = nonfinite(g) if guard else None
    # (a float32 param is updated in place, unless the guard may have to keep it)
    direct = p.dtype == compute and not guard
    p32 = p if direct else p.to(compute, copy=True)
    chain.update(p32, g.to(compute), dict(zip(chain.state, state)), hs)
    if not direct:
        write_param(fmt, p, p32, pos, key[0], bad)
    store(fmt, bufs, state, pos, key[0], bad)
    return bad


# -- checkpoints ------------------------------------------------------------------------
#: The state key of an 8-bit buffer's codes: ``"exp_avg"`` → ``"exp_avg.codes"`` (a key of
#: their own, so that nothing that expects ``"exp_avg"`` — torch.optim, DCP loading into a
#: float32 optimizer's state — can take codes for numbers: it finds the key missing).
CODES_SUFFIX = ".codes"

#: The state key of an 8-bit buffer's block scales: ``"exp_avg"`` → ``"exp_avg.absmax"``.
SCALE_SUFFIX = ".absmax"


def dequantize_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A copy of an optimizer ``state_dict`` whose 8-bit state (uint8 codes under
    ``<name>.codes`` with their ``<name>.absmax`` scales) is decoded to float32 under
    ``<name>`` and whose bfloat16 state is float32: what ``torch.optim``'s
    ``load_state_dict`` (or a descent optimizer with another ``state_dtype``) can take.
    Other entries are kept as they are."""
    out = dict(state_dict)
    state = {}
    for k, entry in state_dict["state"].items():
        new = {}
        for name, v in entry.items():
            base = name[: -len(CODES_SUFFIX)] if name.endswith(CODES_SUFFIX) else name
            if name.endswith(SCALE_SUFFIX) and (
                name[: -len(SCALE_SUFFIX)] + CODES_SUFFIX in entry or name[: -len(SCALE_SUFFIX)] in entry
            ):
                continue
            scales = entry.get(base + SCALE_SUFFIX)
            if isinstance(v, Tensor) and v.dtype == torch.uint8 and isinstance(scales, Tensor):
                v = decode_like(v.detach().cpu(), scales.detach().cpu()).to(v.device)
            elif isinstance(v, Tensor) and v.dtype == torch.bfloat16 and name != "step":
                v = v.float()
            new[base] = v
        state[k] = new
    out["state"] = state
    return out
