"""RMSProp."""

from __future__ import annotations

from typing import Any

from ..rules import EMAOfSquares, HeavyBall
from .base import RuleOptimizer


def _no_dampening(group: Any) -> float:
    return 0.0


class RMSprop(RuleOptimizer):
    r"""RMSProp (Hinton, Srivastava & Swersky 2012; centered: Graves 2013).

    .. math::
        v_t = \alpha v_{t-1} + (1-\alpha)\,g_t^2,\qquad
        u = \frac{g_t}{\sqrt{v_t - \bar g_t^2\,[\text{centered}]} + \epsilon},\qquad
        b_t = \mu b_{t-1} + u,\qquad w \leftarrow w - \eta\,(b_t \text{ if } \mu > 0 \text{ else } u)

    Same arguments, defaults, state (``step``, ``square_avg``, ``momentum_buffer``,
    ``grad_avg``) and numbers as ``torch.optim.RMSprop``. ``alpha`` is the notes'
    ``decay_rate``; cs231n's ``cache = decay_rate*cache + (1-decay_rate)*dx**2;
    x -= lr*dx/(sqrt(cache) + eps)`` is ``RMSprop(lr=lr, alpha=decay_rate, eps=eps)``.
    ``eps_inside=True`` gives :math:`g/\sqrt{v+\epsilon}`.
    """

    flags = (*RuleOptimizer.flags, "momentum", "centered", "eps_inside")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        eps_inside: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        if eps_inside is not False:  # only then a group key, so groups match torch.optim's
            defaults["eps_inside"] = eps_inside
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
        rules = [
            EMAOfSquares(
                beta="alpha",
                bias_correction=False,
                centered=bool(group["centered"]),
                eps_inside=bool(group.get("eps_inside", False)),
                buffer="square_avg",
            )
        ]
        if group["momentum"] > 0:
            # torch's RMSprop buffer starts at zeros, so b_1 = u: HeavyBall's first step.
            rules.append(HeavyBall(dampening=_no_dampening))
        return rules
