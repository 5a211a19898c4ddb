"""Gradient descent and momentum: SGD (torch.optim's), and the notes' EMA momentum."""

from __future__ import annotations

from typing import Any

from ..engine.kernels import warn
from ..rules import EMA, HeavyBall
from .base import RuleOptimizer
from .validation import COMMON, flag, unit


class SGD(RuleOptimizer):
    r"""Stochastic gradient descent, optionally with heavy-ball or Nesterov momentum.

    .. math::
        b_1 = g_1,\quad b_t = \mu b_{t-1} + (1-d)\,g_t,\qquad
        w \leftarrow w - \eta\,(g_t + \mu b_t \text{ if nesterov else } b_t)

    Same arguments, defaults, state (``momentum_buffer``) and numbers as
    ``torch.optim.SGD``. ``SGD(lr=η)`` is the notes' GD / mini-batch GD / SGD (which one
    depends on the batch you feed it); ``momentum=μ`` is the notes' SGDM
    ``v ← μv − ηg; w ← w + v``; ``nesterov=True`` is cs231n's Nesterov form.
    """

    state_step = False
    sparse_grads = True
    flags = (*RuleOptimizer.flags, "momentum", "nesterov")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        # torch.optim checks nesterov against the constructor's arguments only ...
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening "
                f"(got momentum={momentum}, dampening={dampening})"
            )
        super().__init__(
            params,
            defaults,
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )

    def check(self, group):
        # ... and runs a param group that combines them, as this does (same numbers).
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            warn(
                f"descent: an SGD param group has nesterov=True with momentum={group['momentum']} "
                f"and dampening={group['dampening']}; torch.optim runs it without a check (momentum 0: "
                "plain SGD; dampening scales the buffer's new gradient) and so does descent"
            )

    def rule(self, group):
        if group["momentum"] == 0:
            return []
        return [HeavyBall(nesterov=group["nesterov"])]


class EMAMomentum(RuleOptimizer):
    r"""Momentum as an exponential moving average, the notes' SGDM formula.

    .. math::
        m_t = \beta m_{t-1} + (1-\beta)\,g_t,\quad m_0 = 0,\qquad w \leftarrow w - \eta\,m_t

    Unlike ``SGD(momentum=β, dampening=β)``, whose buffer starts at :math:`g_1`, this
    starts from zero as the notes write it (and as Adam's first moment does); with
    ``bias_correction=True`` it divides by :math:`1-\beta^t`.
    """

    state_step = True
    flags = (*RuleOptimizer.flags, "bias_correction")
    checks = {**COMMON, "beta": unit("beta value"), "bias_correction": flag("bias_correction")}

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        beta: float = 0.9,
        weight_decay: float = 0,
        bias_correction: bool = False,
        *,
        maximize: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "beta": beta,
            "weight_decay": weight_decay,
            "bias_correction": bias_correction,
            "maximize": maximize,
        }
        super().__init__(
            params,
            defaults,
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )

    def rule(self, group):
        return [EMA(beta="beta", bias_correction=bool(group["bias_correction"]))]
