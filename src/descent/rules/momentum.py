"""First-moment rules: what direction to move in, given the gradients so far."""

from __future__ import annotations

from .base import Hyper, Transform, axpy, decay_add_, ema, folded, mix_, read, tensor_arithmetic


class HeavyBall(Transform):
    """Polyak's heavy ball, torch.optim's form.

        b_1 = g_1;   b_t = μ·b_{t−1} + (1 − d)·g_t          (d: dampening)
        u = g + μ·b_t   (nesterov)   or   u = b_t

    With a constant η this is the notes' v ← μv − ηg, w ← w + v (v = −η·b). The buffer
    starts at g_1, not at (1 − d)·g_1: that is torch's convention, kept for parity.
    """

    def __init__(
        self,
        momentum: Hyper = "momentum",
        dampening: Hyper = "dampening",
        nesterov: bool = False,
        buffer: str = "momentum_buffer",
    ):
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.buffer = buffer
        self.state = (buffer,)

    def scalars(self, group, t, host):
        mu = read(group, self.momentum)
        first = t <= 1
        # b ← keep·b + take·u: on the first step the buffer is fresh zeros, so keep = 0
        # and take = 1 give exactly b_1 = g_1 without a branch in the kernel.
        return {
            "mu": mu,
            "keep": 0.0 if first else mu,
            "take": 1.0 if first else 1 - read(group, self.dampening),
        }

    def apply(self, u, g, p, s, h):
        b = decay_add_(s[self.buffer], h["keep"], h["take"], u)
        return axpy(u, h["mu"], b) if self.nesterov else b


class EMA(Transform):
    """Exponential moving average of the gradient (Adam's first moment).

    m_t = β·m_{t−1} + (1 − β)·g_t,  m_0 = 0
    m̂_t = m_t / (1 − β^t)            (bias_correction)

    ``fold_lr=True``: the correction is torch.optim's step size ``lr/(1 − β^t)`` (Adam,
    Adamax), which a tensor ``lr`` rounds to its own dtype.
    """

    def __init__(
        self,
        beta: Hyper = ("betas", 0),
        bias_correction: bool = True,
        buffer: str = "exp_avg",
        fold_lr: bool = False,
    ):
        self.beta = beta
        self.bias_correction = bias_correction
        self.buffer = buffer
        self.state = (buffer,)
        self.fold_lr = fold_lr

    def scalars(self, group, t, host):
        beta = read(group, self.beta)
        h = ema(beta)
        if self.bias_correction:
            bc = 1 - beta**t
            h["correction"] = folded(group, 1 / bc, bc) if self.fold_lr else 1 / bc
        return h

    def apply(self, u, g, p, s, h):
        m = mix_(s[self.buffer], u, h["beta"], h["1-beta"])
        # m̂ = m·correction, the scalar applied at the step (see Transform.apply)
        return (m, h["correction"]) if self.bias_correction else m


class NesterovEMA(Transform):
    """Nadam's first moment (Dozat 2016), with torch's momentum schedule.

        μ_t = β·(1 − ½·0.96^(t·ψ))          (ψ: momentum_decay; ψ = ∞ gives μ_t = β)
        m_t = β·m_{t−1} + (1 − β)·g_t
        u   = (1 − μ_t)/(1 − Π_{i≤t} μ_i) · g_t  +  μ_{t+1}/(1 − Π_{i≤t+1} μ_i) · m_t

    With ψ = ∞ this is the plain Nadam (Adam with Nesterov momentum, no schedule):
    u = (1 − β)/(1 − β^t)·g + β/(1 − β^{t+1})·m. The running product Π μ_i is host
    state ``mu_product``, a float32 scalar per tensor as in torch.optim.

    ``schedule=False``: μ_t = β exactly, with β^t computed in float64 each step (no
    ``mu_product``), the plain Nadam to float64 precision.
    ``next_correction=False``: the momentum term is divided by 1 − Π_{i≤t} μ_i, the
    same correction as the gradient's, u = (β·m_t + (1 − β)·g_t)/(1 − β^t) without
    a schedule: Nadam as Ruder's overview (2016) writes it, β₁·m̂_t + (1 − β₁)·g_t/(1 − β₁^t).
    """

    host = ("mu_product",)

    def __init__(
        self,
        beta: Hyper = ("betas", 0),
        momentum_decay: Hyper = "momentum_decay",
        buffer: str = "exp_avg",
        schedule: bool = True,
        next_correction: bool = True,
    ):
        self.beta = beta
        self.momentum_decay = momentum_decay
        self.buffer = buffer
        self.state = (buffer,)
        self.schedule = schedule
        self.next_correction = next_correction
        if not schedule:
            self.host = ()

    def host_init(self, name):
        return 1.0

    @staticmethod
    def _mu(beta, psi, t):
        return beta * (1.0 - 0.5 * 0.96 ** (t * psi))

    def advance(self, group, t, host):
        if self.schedule:
            mu = self._mu(read(group, self.beta), read(group, self.momentum_decay), t)
            host["mu_product"] = host["mu_product"] * host.num("mu_product", mu)

    def scalars(self, group, t, host):
        beta = read(group, self.beta)
        if self.schedule:
            psi = read(group, self.momentum_decay)
            mu, mu_next = self._mu(beta, psi, t), self._mu(beta, psi, t + 1)
            product = host["mu_product"]
        else:
            mu = mu_next = beta
            product = beta**t
        next_product = product * mu_next if self.next_correction else product
        cg, cm = (1.0 - mu) / (1.0 - product), mu_next / (1.0 - next_product)
        arith = tensor_arithmetic(group) if self.schedule and self.next_correction else None
        lr = read(group, "lr") if arith is not None else 0.0
        if arith is not None and lr != 0.0:
            # torch.optim's −lr·(1 − μ)/(1 − Π) and (−lr·μ')/(1 − Π·μ') on a tensor lr
            op, num = arith.op, arith.num
            cg = op(op(-lr * num(1.0 - mu)) / num(1.0 - product)) / -lr
            cm = op(op(-lr * num(mu_next)) / num(1.0 - next_product)) / -lr
        return {**ema(beta), "cg": cg, "cm": cm}

    def apply(self, u, g, p, s, h):
        m = mix_(s[self.buffer], u, h["beta"], h["1-beta"])
        return h["cg"] * u + h["cm"] * m


class LookaheadMomentum(Transform):
    """Nesterov momentum in Sutskever et al.'s (2013) look-ahead form.

    The parameters hold the true point w; the optimizer evaluates the gradient at the
    look-ahead point w − η·μ·b_{t−1} and this rule, applied there, lands on

        b_t = μ·b_{t−1} + g_t,      w_{t+1} = w_t − η·b_t

    by returning u = b_t − μ·b_{t−1} (the look-ahead shift is undone in the same pass).
    """

    def __init__(self, momentum: Hyper = "momentum", buffer: str = "momentum_buffer"):
        self.momentum = momentum
        self.buffer = buffer
        self.state = (buffer,)

    def scalars(self, group, t, host):
        mu = read(group, self.momentum)
        return {"mu": mu, "keep": 0.0 if t <= 1 else mu}

    def apply(self, u, g, p, s, h):
        b = s[self.buffer]
        back = h["mu"] * b
        decay_add_(b, h["keep"], 1.0, u)
        return b - back
