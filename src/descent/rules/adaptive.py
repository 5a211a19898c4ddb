"""Second-moment rules: per-coordinate step sizes from the squared gradients so far.

Each divides the direction by a denominator built from its statistic v:
``√v + ε`` (eps outside the root, torch.optim's choice) or ``√(v + ε)`` (eps inside,
as some of the notes write AdaGrad and RMSProp).
"""

from __future__ import annotations

import torch

from .base import Hyper, Transform, ema, folded, kept, mix_, mix_sq_, read, sqrt, square


def _root(v, eps, eps_inside: bool):
    return sqrt(v + eps) if eps_inside else sqrt(v) + eps


class SumOfSquares(Transform):
    """AdaGrad (Duchi et al. 2011).

    G_t = G_0 + Σ_{i≤t} g_i²                  (G_0: initial_accumulator_value)
    u   = g / (√G_t + ε) / (1 + (t − 1)·lr_decay)
    """

    linear = True
    sparse = True

    def __init__(
        self,
        eps: Hyper = "eps",
        lr_decay: Hyper = "lr_decay",
        initial: Hyper = "initial_accumulator_value",
        eps_inside: bool = False,
        buffer: str = "sum",
    ):
        self.eps = eps
        self.lr_decay = lr_decay
        self.initial = initial
        self.eps_inside = eps_inside
        self.buffer = buffer
        self.state = (buffer,)

    def fill(self, name, group):
        return read(group, self.initial)

    def scalars(self, group, t, host):
        slow = 1 + (t - 1) * read(group, self.lr_decay)
        # torch.optim's lr/(1 + (t − 1)·lr_decay), rounded as a tensor lr rounds it
        return {"eps": read(group, self.eps), "decay": folded(group, 1 / slow, slow)}

    def apply(self, u, g, p, s, h):
        G = s[self.buffer]
        G.add_(square(g))
        return u / _root(G, h["eps"], self.eps_inside), h["decay"]


class EMAOfSquares(Transform):
    """RMSProp's and Adam's second moment.

    v_t = β·v_{t−1} + (1 − β)·g_t²
    centered:      v_t ← v_t − ḡ_t²,  ḡ_t = β·ḡ_{t−1} + (1 − β)·g_t     (Graves 2013)
    amsgrad:       v̂_t = max(v̂_{t−1}, v_t)                                 (Reddi et al. 2018)
    bias_correction: v_t ← v_t / (1 − β^t)
    u = u / (√v_t + ε)
    """

    linear = True

    def __init__(
        self,
        beta: Hyper = ("betas", 1),
        eps: Hyper = "eps",
        bias_correction: bool = True,
        centered: bool = False,
        amsgrad: bool = False,
        eps_inside: bool = False,
        buffer: str = "exp_avg_sq",
        mean_buffer: str = "grad_avg",
        max_buffer: str = "max_exp_avg_sq",
    ):
        self.beta = beta
        self.eps = eps
        self.bias_correction = bias_correction
        self.centered = centered
        self.amsgrad = amsgrad
        self.eps_inside = eps_inside
        self.buffer = buffer
        self.mean_buffer = mean_buffer
        self.max_buffer = max_buffer
        self.state = (
            buffer,
            *((mean_buffer,) if centered else ()),
            *((max_buffer,) if amsgrad else ()),
        )

    def scalars(self, group, t, host):
        beta, eps = read(group, self.beta), read(group, self.eps)
        h = ema(beta)
        h["eps"] = eps
        if self.bias_correction:
            # v̂ = v·c with c = 1/(1 − βᵗ):  u/(√v̂ + ε) = [u/(√v + ε/√c)]·(1/√c) and
            # u/√(v̂ + ε) = [u/√(v + ε/c)]·(1/√c), the scalar left for the step.
            c = 1 / (1 - beta**t)
            h["eps"] = eps / c if self.eps_inside else eps / c**0.5
            h["correction"] = 1 / c**0.5
        return h

    def apply(self, u, g, p, s, h):
        v = mix_sq_(s[self.buffer], g, h["beta"], h["1-beta"])
        if self.centered:
            mean = mix_(s[self.mean_buffer], g, h["beta"], h["1-beta"])
            v = v - square(mean)
        if self.amsgrad:
            vmax = s[self.max_buffer]
            vmax.copy_(torch.maximum(kept(vmax, vmax, v), v))
            v = vmax
        u = u / _root(v, h["eps"], self.eps_inside)
        return (u, h["correction"]) if self.bias_correction else u


class InfinityNorm(Transform):
    """Adamax's second moment (Kingma & Ba 2015, §7.1): the L∞ limit of Adam's.

    v_t = max(β·v_{t−1}, |g_t| + ε)
    u   = u / v_t
    """

    linear = True

    def __init__(self, beta: Hyper = ("betas", 1), eps: Hyper = "eps", buffer: str = "exp_inf"):
        self.beta = beta
        self.eps = eps
        self.buffer = buffer
        self.state = (buffer,)

    def scalars(self, group, t, host):
        return {"beta": read(group, self.beta), "eps": read(group, self.eps)}

    def apply(self, u, g, p, s, h):
        v = s[self.buffer]
        v.copy_(torch.maximum(v * h["beta"], g.abs() + h["eps"]))
        return u / v


class AdaDelta(Transform):
    """AdaDelta (Zeiler 2012): the step's units come from the running RMS of past steps.

    E[g²]_t  = ρ·E[g²]_{t−1} + (1 − ρ)·g_t²
    Δ_t      = √(E[Δ²]_{t−1} + ε) / √(E[g²]_t + ε) · g_t
    E[Δ²]_t  = ρ·E[Δ²]_{t−1} + (1 − ρ)·Δ_t²
    u = Δ_t        (torch.optim then scales by lr, 1.0 by default as in the paper)
    """

    def __init__(self, rho: Hyper = "rho", eps: Hyper = "eps"):
        self.rho = rho
        self.eps = eps
        self.state = ("square_avg", "acc_delta")

    def scalars(self, group, t, host):
        return {**ema(read(group, self.rho)), "eps": read(group, self.eps)}

    def apply(self, u, g, p, s, h):
        sq, acc = s["square_avg"], s["acc_delta"]
        mix_sq_(sq, u, h["beta"], h["1-beta"])
        delta = sqrt((acc + h["eps"]) / (sq + h["eps"])) * u
        mix_sq_(acc, delta, h["beta"], h["1-beta"])
        return delta


class Rectified(Transform):
    """RAdam's second moment (Liu et al. 2020): adapt only once the variance of the
    adaptive step is tractable.

        v_t = β·v_{t−1} + (1 − β)·g_t²
        ρ_∞ = 2/(1 − β) − 1,   ρ_t = ρ_∞ − 2t·β^t/(1 − β^t)
        ρ_t > 5:  u = u · r_t · √(1 − β^t) / (√v_t + ε),
                  r_t = √((ρ_t − 4)(ρ_t − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_t))
        else:     u = u   (plain momentum SGD)
    """

    linear = True

    def __init__(self, beta: Hyper = ("betas", 1), eps: Hyper = "eps", buffer: str = "exp_avg_sq"):
        self.beta = beta
        self.eps = eps
        self.buffer = buffer
        self.state = (buffer,)

    def scalars(self, group, t, host):
        beta = read(group, self.beta)
        bc = 1 - beta**t
        rho_inf = 2 / (1 - beta) - 1
        rho_t = rho_inf - 2 * t * beta**t / bc
        adaptive = rho_t > 5.0
        h = {**ema(beta), "eps": read(group, self.eps), "adaptive": adaptive}
        if adaptive:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            h["scale"] = rect * bc**0.5
        return h

    def apply(self, u, g, p, s, h):
        v = mix_sq_(s[self.buffer], g, h["beta"], h["1-beta"])
        if h["adaptive"]:
            return u / (sqrt(v) + h["eps"]), h["scale"]
        return u
