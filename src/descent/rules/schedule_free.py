"""Schedule-Free's step (Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky 2024,
"The Road Less Scheduled"): an average of the iterates takes the place of a schedule."""

from __future__ import annotations

from .base import Descend, Hyper, axpy, kept, read, sub_


class ScheduleFree(Descend):
    r"""The Schedule-Free step, put last in a chain in place of :class:`Descend`.

    Three sequences: z (the base iterates, state ``z``), x (their weighted average, the
    point to evaluate) and y (the point where the gradient is taken, held by the params
    while training); with γ_t = η·min(1, t/T_warmup) and the earlier transforms' direction
    u_t (the gradient for SGD, g/(√v̂ + ε) for AdamW, + λ·y_t when ``decoupled``):

        y_t     = (1 − β)·z_t + β·x_t
        z_{t+1} = z_t − γ_t·u_t
        x_{t+1} = (1 − c_{t+1})·x_t + c_{t+1}·z_{t+1},   c_{t+1} = w_t / Σ_{i≤t} w_i,
        w_t     = t^r · (max_{i≤t} γ_i)^p                (r, p: ``r``, ``weight_lr_power``)

    x is never stored: the params move from y_t to y_{t+1} in place,
    y ← y + c·(z_t − y) + γ·(β·(1 − c) − 1)·u, and the optimizer's ``eval()`` moves them
    to x (``train()`` back to y). z starts at the params' first value; the running
    max ``lr_max`` and sum ``weight_sum`` are float64 host scalars, named as the
    reference implementation (facebookresearch/schedule_free) names them.
    """

    linear = False
    sparse = False
    state = ("z",)
    host = ("lr_max", "weight_sum")
    wide = ("lr_max", "weight_sum")

    def __init__(
        self,
        beta: Hyper = ("betas", 0),
        decoupled: bool = False,
        lr: Hyper = "lr",
        weight_decay: Hyper = "weight_decay",
        warmup: Hyper = "warmup_steps",
        r: Hyper = "r",
        power: Hyper = "weight_lr_power",
    ):
        super().__init__(decoupled=decoupled, lr=lr, weight_decay=weight_decay)
        self.beta = beta
        self.warmup = warmup
        self.r = r
        self.power = power

    def host_init(self, name):
        return -1.0 if name == "lr_max" else 0.0

    def _rate(self, group, t):
        """γ_t: the learning rate with its linear warmup."""
        warmup = read(group, self.warmup)
        lr = read(group, self.lr)
        return lr * (t / warmup) if t <= warmup else lr

    def _weight(self, group, t, lr_max):
        return t ** read(group, self.r) * lr_max ** read(group, self.power)

    def advance(self, group, t, host):
        # A run's params share these values: Python floats, as the reference computes them.
        lr_max = max(float(host["lr_max"]), float(self._rate(group, t)))
        host["lr_max"] = lr_max
        host["weight_sum"] = float(host["weight_sum"]) + self._weight(group, t, lr_max)

    def scalars(self, group, t, host, pace=1.0):
        lr = self._rate(group, t) * pace
        weight, total = self._weight(group, t, host["lr_max"]), host["weight_sum"]
        c = weight / total if total else 0.0
        beta = read(group, self.beta)
        first = t <= 1
        h = {
            "c": c,
            "lr": lr,
            "coef": lr * (beta * (1 - c) - 1),
            # z ← keep·z + take·y: a fresh z (zeros) becomes y on the first step
            "keep": 0.0 if first else 1.0,
            "take": 1.0 if first else 0.0,
        }
        if self.decoupled:
            h["wd"] = read(group, self.weight_decay)
        return h

    def apply(self, u, g, p, s, h):
        z = s["z"]
        z.mul_(h["keep"]).add_(h["take"] * p)
        if self.decoupled:  # decay computed at y, with the direction (AdamW's form)
            u = axpy(u, h["wd"], kept(p, h["wd"]))
        p.add_(h["c"] * (z - p))
        p.add_(h["coef"] * u)
        sub_(z, h["lr"], u)
        return u
