"""Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks";
Liu et al. 2025, "Muon is scalable for LLM training"): momentum, then the update
orthogonalised by a Newton–Schulz iteration, as torch.optim.Muon computes it.

    b_t = μ·b_{t−1} + (1 − μ)·g_t                    (torch's lerp form)
    B̃_t = (1 − μ)·g_t + μ·b_t   (nesterov)   or   b_t
    O_t = NS⁽ᵃ'ᵇ'ᶜ⁾_k(B̃_t)  ≈ U·Vᵀ  where B̃ = U·S·Vᵀ
    w ← w·(1 − η·λ) − η·r(A, B)·O_t                   r: ``adjust_lr_fn``

NS: X₀ = B̃/max(‖B̃‖_F, ε) (transposed when A > B, so X·Xᵀ is the smaller Gram matrix),
then k times  G = X·Xᵀ,  X ← a·X + (b·G + c·G²)·X, with (a, b, c) = (3.4445, −4.7750,
2.0315) by default: a quintic whose slope at 0 is as large as it may be, so singular
values spread over (0, 1] reach ≈ [0.7, 1.2] in five iterations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Hyper, Transform, ema, mix, mix_, read

#: torch.optim.Muon's (Keller Jordan's) constants
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7

ADJUST_LR = (None, "original", "match_rms_adamw")

#: the precisions Newton–Schulz may run in (``ns_dtype``): torch's bfloat16, or float32
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


class MuonMomentum(Transform):
    """b ← μ·b + (1 − μ)·g;  u = (1 − μ)·g + μ·b with ``nesterov``, else b (elementwise)."""

    def __init__(self, momentum: Hyper = "momentum", nesterov: bool = True, buffer: str = "momentum_buffer"):
        self.momentum = momentum
        self.nesterov = nesterov
        self.buffer = buffer
        self.state = (buffer,)

    def scalars(self, group, t, host):
        return ema(read(group, self.momentum), "mu")

    def apply(self, u, g, p, s, h):
        b = mix_(s[self.buffer], u, h["mu"], h["1-mu"])
        return mix(b, u, h["mu"], h["1-mu"]) if self.nesterov else b


def adjust_ratio(rule: str | None, rows: int, cols: int) -> float:
    """torch.optim.Muon's ``adjust_lr_fn``: the step size's factor for an A × B matrix.
    ``"original"`` (Keller Jordan): √max(1, A/B); ``"match_rms_adamw"`` (Moonshot):
    0.2·√max(A, B), an update of AdamW's RMS, so AdamW's lr and weight decay carry over."""
    if rule is None or rule == "original":
        return math.sqrt(max(1, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def newton_schulz(
    x: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype
) -> Tensor:
    """The orthogonalisation of a batch of matrices ``x`` (``B × A × C``) in ``dtype``: one
    batched matmul per product, whatever the batch size."""
    if steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = coefficients
    tall = x.size(-2) > x.size(-1)
    X = x.to(dtype)
    if tall:
        X = X.mT
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp(min=eps)
    if X.size(0) == 1:
        # one matrix: 2-D products (the CPU's batched bfloat16 matmul is up to 1.7× slower
        # than its plain one on a 2048 × 512 matrix)
        Y = X[0]
        for _ in range(steps):
            G = Y @ Y.mT
            Y = torch.addmm(Y, torch.addmm(G, G, G, beta=b, alpha=c), Y, beta=a)
        X = Y.unsqueeze(0)
    else:
        for _ in range(steps):
            G = X @ X.mT
            X = torch.baddbmm(X, torch.baddbmm(G, G, G, beta=b, alpha=c), X, beta=a)
    return X.mT if tall else X


class Orthogonalize(Transform):
    """u ← NS(u)·r(A, B): Muon's orthogonalised update, on whole matrices.

    Reads from the group: ``ns_coefficients``, ``ns_steps``, ``eps``, ``adjust_lr_fn`` and
    ``ns_dtype`` (``"bfloat16"``, as torch.optim.Muon, or ``"float32"``; absent:
    bfloat16), and ``flatten`` (a conv kernel ``O × I × kh × kw`` orthogonalised as the
    ``O × (I·kh·kw)`` matrix, as the reference Muon does; absent: refused). The factor
    r(A, B) goes to the step size, so decoupled weight decay uses η, not η·r.
    """

    whole = True

    def scalars(self, group, t, host):
        return {
            "coefficients": tuple(float(c) for c in group.get("ns_coefficients", NS_COEFFICIENTS)),
            "steps": int(group.get("ns_steps", NS_STEPS)),
            "eps": float(group.get("eps", NS_EPS)),
            "adjust": group.get("adjust_lr_fn"),
            "dtype": ns_dtype(group.get("ns_dtype", "bfloat16")),
            "flatten": bool(group.get("flatten", False)),
        }

    def apply(self, u, g, p, s, h):
        if u.dim() != 3:
            if u.dim() < 3 or not h["flatten"]:
                raise ValueError(
                    f"Muon orthogonalises 2-D matrices, got a param of shape {tuple(u.shape[1:])} "
                    "(flatten=True treats a conv kernel as out_channels × the rest)"
                )
            x = u.reshape(u.size(0), u.size(1), -1)
        else:
            x = u
        o = newton_schulz(x, h["coefficients"], h["steps"], h["eps"], h["dtype"])
        return o.to(u.dtype).reshape(u.shape), adjust_ratio(h["adjust"], x.size(-2), x.size(-1))


def ns_dtype(value) -> torch.dtype:
    """``ns_dtype`` as a torch dtype (a name or a dtype), or a ValueError naming it."""
    if isinstance(value, torch.dtype) and value in NS_DTYPES.values():
        return value
    if isinstance(value, str) and value in NS_DTYPES:
        return NS_DTYPES[value]
    raise ValueError(f"Invalid ns_dtype: {value!r} (expected one of {', '.join(NS_DTYPES)})")
