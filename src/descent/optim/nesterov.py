"""Nesterov's accelerated gradient in the look-ahead form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..rules import EMA, HeavyBall, LookaheadMomentum
from ..rules.base import Fixed
from .base import RuleOptimizer
from .validation import COMMON, flag


class LookaheadNesterov(RuleOptimizer):
    r"""Nesterov momentum as Sutskever et al. (2013) and the notes write it: the gradient
    is taken at the point the momentum is about to carry you to.

    .. math::
        g_t = \nabla f(w_t - \eta\mu\,b_{t-1}),\qquad b_t = \mu b_{t-1} + g_t,\qquad
        w_{t+1} = w_t - \eta\,b_t

    The parameters always hold :math:`w_t`; :meth:`step` moves them to the look-ahead
    point, calls ``closure`` there, and lands on :math:`w_{t+1}`, so a closure is
    required. ``SGD(nesterov=True)`` is the same method in cs231n's change of variables
    (its parameters hold the look-ahead point :math:`w_t - \eta\mu b_t`).

    The notes' other look-ahead points: ``lookahead_lr=False`` takes the gradient at
    :math:`w_t - \mu b_{t-1}` (note 001 §4 writes :math:`\theta - \gamma m_{t-1}`),
    ``lookahead_momentum=False`` at :math:`w_t - \eta b_{t-1}`; ``ema=True`` keeps the
    momentum as an average, :math:`m_t = \mu m_{t-1} + (1-\mu) g_t`, :math:`m_0 = 0`
    (note 000's NAG: ``ema=True, lookahead_momentum=False`` is
    :math:`g_t = \nabla f(\omega_t - \eta m_{t-1})`).
    """

    state_step = False
    flags = (*RuleOptimizer.flags, "momentum", "ema", "lookahead_lr", "lookahead_momentum")
    checks = {
        **COMMON,
        "ema": flag("ema"),
        "lookahead_lr": flag("lookahead_lr"),
        "lookahead_momentum": flag("lookahead_momentum"),
    }

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
        ema: bool = False,
        lookahead_lr: bool = True,
        lookahead_momentum: bool = True,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "ema": ema,
            "lookahead_lr": lookahead_lr,
            "lookahead_momentum": lookahead_momentum,
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

    @staticmethod
    def _sutskever(group) -> bool:
        """Sutskever's form, whose rule undoes the look-ahead shift in the same pass."""
        return not group["ema"] and group["lookahead_lr"] and group["lookahead_momentum"]

    def rule(self, group):
        if self._sutskever(group):
            return [LookaheadMomentum()]
        # Other look-ahead points: the step moves the params back first, then steps.
        if group["ema"]:
            return [EMA(beta="momentum", bias_correction=False, buffer="momentum_buffer")]
        return [HeavyBall(dampening=Fixed(0.0))]

    def _shift(self, sign: float, only_without_grad: bool = False) -> None:
        for group in self.param_groups:
            scale = sign * (float(group["lr"]) if group["lookahead_lr"] else 1.0)
            scale *= float(group["momentum"]) if group["lookahead_momentum"] else 1.0
            for p in group["params"]:
                if only_without_grad and self._sutskever(group) and p.grad is not None:
                    continue
                buf = self.state[p].get("momentum_buffer") if p in self.state else None
                if buf is not None:
                    p.add_(buf, alpha=-scale)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Move to the look-ahead point, evaluate ``closure`` there, and step."""
        if closure is None:
            raise RuntimeError(
                "LookaheadNesterov.step needs a closure: the gradient is taken at the "
                "look-ahead point w − lr·momentum·b, which only the closure can evaluate"
            )
        with torch.no_grad():
            self._shift(+1.0)
        with torch.enable_grad():
            loss = closure()
        with torch.no_grad():
            # Back to w_t: params the closure gave no gradient (they do not step), and in
            # the other forms every param (their rules step from w_t).
            self._shift(-1.0, only_without_grad=True)
            self._engine.step(self.param_groups, self.state)
        return loss
