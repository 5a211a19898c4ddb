"""Sign-based rules."""

from __future__ import annotations

from .base import Hyper, Transform, read


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
        return {"beta1": read(group, self.beta1), "beta2": read(group, self.beta2)}

    def apply(self, u, g, p, s, h):
        m = s[self.buffer]
        direction = m.lerp(u, 1 - h["beta1"]).sign()
        m.lerp_(u, 1 - h["beta2"])
        return direction
