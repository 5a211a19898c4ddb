"""Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear
Memory Cost"), as torch.optim.Adafactor computes it.

    β̂₂ₜ = 1 − t^τ                 (τ = ``beta2_decay``, −0.8)
    ρ_t = min(η, 1/√t),  α_t = max(ε₂, RMS(w_{t−1}))·ρ_t        (relative step size)
    matrices (the last two dims, A × B):
        R_t = β̂₂ₜ·R_{t−1} + (1 − β̂₂ₜ)·mean_cols(g²)      (``row_var``, A × 1)
        C_t = β̂₂ₜ·C_{t−1} + (1 − β̂₂ₜ)·mean_rows(g²)      (``col_var``, 1 × B)
        v̂_t = R_t·C_t / max(mean(R_t), ε₁)                (rank one: R·Cᵀ/ΣR up to the means)
    vectors:  v̂_t = β̂₂ₜ·v̂_{t−1} + (1 − β̂₂ₜ)·g²            (``variance``)
    U_t = g / √max(v̂_t, ε₁²),   Û_t = U_t / max(1, RMS(U_t)/d)  (update clipping)
    w ← w·(1 − η·λ) − α_t·Û_t

ε₁ defaults to the param dtype's machine epsilon. The state is O(A + B) per matrix
instead of Adam's O(A·B).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Descend, Hyper, Transform, read, tensor_arithmetic


def _rms(x: Tensor) -> Tensor:
    """The RMS of each tensor of the batch ``x`` (keeping its dims for broadcasting)."""
    dims = tuple(range(1, x.dim()))
    if not dims:
        return x.abs()
    n = math.prod(x.shape[1:])
    return torch.linalg.vector_norm(x, dim=dims, keepdim=True) / math.sqrt(n)


class FactoredSecondMoment(Transform):
    """u ← α_t·Û_t: Adafactor's second moment (factored over the last two dims of a
    matrix), relative step size and update clipping, on whole tensors."""

    whole = True
    state = ("row_var", "col_var", "variance")

    def __init__(self, beta2_decay: Hyper = "beta2_decay", d: Hyper = "d"):
        self.beta2_decay = beta2_decay
        self.d = d

    def buffers(self, shape):
        if len(shape) > 1:
            return {"row_var": (*shape[:-1], 1), "col_var": (*shape[:-2], 1, shape[-1])}
        return {"variance": tuple(shape)}

    def scalars(self, group, t, host):
        lr = read(group, "lr")
        eps1, eps2 = group["eps"]
        # torch.optim keeps a tensor lr a tensor: ρ = min(lr, t^−½) is then lr itself while
        # lr is the smaller, and α = max(ε₂, RMS)·ρ rounds to lr's dtype
        arith = tensor_arithmetic(group, "lr")
        low = arith is not None and not 1 / t**0.5 < lr
        return {
            "1-beta2": t ** read(group, self.beta2_decay),
            "rho": arith.num(lr) if low else min(lr, 1 / t**0.5),
            "rho_dtype": arith.dtype if low else None,
            "eps1": None if eps1 is None else float(eps1),
            "eps2": float(eps2),
            "d": read(group, self.d),
        }

    def apply(self, u, g, p, s, h):
        eps1 = torch.finfo(p.dtype).eps if h["eps1"] is None else h["eps1"]
        alpha = torch.clamp(_rms(p), min=h["eps2"]) * h["rho"]  # before the decay, as torch
        w = h["1-beta2"]
        if u.dim() > 2:  # a matrix (or a stack of them) per batch entry
            row, col = s["row_var"], s["col_var"]
            row.lerp_(torch.linalg.vector_norm(u, dim=-1, keepdim=True).square_().div_(u.size(-1)), w)
            # (torch.optim squares a norm over dim −2; ATen's norm over a strided dim is 25×
            # slower than summing the squares, which differs from it in the last bits)
            col.lerp_(u.square().sum(dim=-2, keepdim=True).div_(u.size(-2)), w)
            # R·C/mean(R), the division on the row vector rather than the A × B product
            v = (row / row.mean(dim=-2, keepdim=True).clamp_(min=eps1)) @ col
            v.clamp_(min=eps1 * eps1)
        else:
            var = s["variance"]
            var.lerp_(u * u, w)
            v = torch.clamp(var, min=eps1 * eps1)
        update = v.rsqrt_().mul_(u)
        clip = torch.clamp(_rms(update) / h["d"], min=1.0)
        low = h["rho_dtype"]
        if low is None:
            return update.mul_(alpha / clip)
        alpha = torch.clamp(_rms(p), min=h["eps2"]).to(low) * h["rho"]
        return update.mul_((alpha / clip.to(low)).to(update.dtype))


class RelativeStep(Descend):
    """w ← w·(1 − η·λ) − u: the step of a rule whose update carries its own size
    (Adafactor's α_t); η scales only the decoupled weight decay."""

    #: (not linear: a factor pending from an earlier transform is applied to u first, so
    #: the step is one subtraction, with no multiplication by η)
    linear = False

    def __init__(self, decoupled: bool = False, lr: Hyper = "lr", weight_decay: Hyper = "weight_decay"):
        super().__init__(decoupled=decoupled, lr=lr, weight_decay=weight_decay)

    def apply(self, u, g, p, s, h):
        if self.decoupled:
            p.mul_(h["shrink"])
        p.sub_(u if "pace" not in h else h["pace"] * u)
        return u

    def scalars(self, group, t, host, pace: float = 1.0):
        out = {} if pace == 1.0 else {"pace": pace}
        if self.decoupled:
            lr, wd = read(group, self.lr), read(group, self.weight_decay)
            arith = tensor_arithmetic(group, self.lr)
            out["shrink"] = 1 - lr * wd if arith is None else arith.op(1 - arith.op(lr * arith.num(wd)))
        return out
