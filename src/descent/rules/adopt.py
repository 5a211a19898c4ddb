"""ADOPT (Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa &
Matsuo 2024, "ADOPT: Modified Adam Can Converge with Any β₂ with the Optimal Rate")."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Hyper, Transform, ema, mix_, mix_sq_, read, sqrt


def quarter_power(step: float) -> float:
    """The reference implementation's clipping bound, step^(1/4)."""
    return step**0.25


class ADOPT(Transform):
    r"""Adam with the current gradient left out of its own normalization, and the
    normalization before the momentum:

        v_0 = g_0²                        (the first step only initializes v: no move)
        m_t = β₁·m_{t−1} + (1 − β₁)·clip(g_t / max(√v_{t−1}, ε), c_t)
        v_t = β₂·v_{t−1} + (1 − β₂)·g_t²
        u   = m_t

    with the steps counted from 0 as the paper counts them (torch.optim's ``step`` state
    is t + 1) and c_t = ``clip(t)`` (the reference implementation's ``clip_lambda``,
    default t^{1/4}; ``None``: no clipping, the paper's Algorithm 1). Its first step
    has pace 0 (:meth:`Transform.pace`): neither the update nor a decoupled decay moves
    the params.
    """

    state = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        beta1: Hyper = ("betas", 0),
        beta2: Hyper = ("betas", 1),
        eps: Hyper = "eps",
        clip: Callable[[float], float] | None = quarter_power,
    ):
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.clip = clip

    def key(self):
        # the bound is a number computed on the host: only whether there is one shapes the code
        return (type(self).__qualname__, self.beta1, self.beta2, self.eps, self.clip is not None)

    def pace(self, group, t):
        return 0.0 if t <= 1 else 1.0

    def scalars(self, group, t, host):
        h = {
            "first": t <= 1,
            **ema(read(group, self.beta1), "beta1"),
            **ema(read(group, self.beta2), "beta2"),
            "eps": read(group, self.eps),
        }
        if self.clip is not None:
            h["clip"] = float(self.clip(t - 1)) if t > 1 else 0.0
        return h

    def apply(self, u, g, p, s, h):
        m, v = s["exp_avg"], s["exp_avg_sq"]
        if h["first"]:
            v.add_(g * g)
            return m
        n = u / torch.maximum(sqrt(v), h["eps"])
        if self.clip is not None:
            n = torch.minimum(torch.maximum(n, -h["clip"]), h["clip"])
        mix_(m, n, h["beta1"], h["1-beta1"])
        mix_sq_(v, g, h["beta2"], h["1-beta2"])
        return m
