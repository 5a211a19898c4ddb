"""Sign-based rules."""

from __future__ import annotations

from .base import Hyper, Transform, ema, kept, mix, mix_, read


class Lion(Transform):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    u   = sign(β₁·m_{t−1} + (1 − β₁)·g_t)
    m_t = β₂·m_{t−1} + (1 − β₂)·g_t
    """

    def __init__(self, beta1: Hyper = ("betas", 0), beta2: Hyper = ("betas", 1), buffer: str = "exp_avg"):
        self.beta1 = beta1
        self.beta2 = beta2
        self.buffer = buffer
        self.state = (buffer,)

    def scalars(self, group, t, host):
        return {**ema(read(group, self.beta1), "beta1"), **ema(read(group, self.beta2), "beta2")}

    def apply(self, u, g, p, s, h):
        m = s[self.buffer]
        c = mix(kept(m, h["beta1"], h["1-beta1"]), u, h["beta1"], h["1-beta1"])
        # sign(NaN) is 0: a NaN (or ∞) reaching c would leave the param still while m
        # keeps it for good. c − c is 0 where c is finite and NaN elsewhere, so the param
        # shows it, as Adam's would.
        direction = c.sign() + (c - c)
        mix_(m, u, h["beta2"], h["1-beta2"])
        return direction
