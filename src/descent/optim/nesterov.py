"""Nesterov's accelerated gradient in the look-ahead form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..rules import LookaheadMomentum
from .base import RuleOptimizer


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
    """

    state_step = False
    flags = (*RuleOptimizer.flags, "momentum")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "maximize": maximize,
        }
        super().__init__(params, defaults, flat=flat, compile=compile, skip_nonfinite=skip_nonfinite)

    def rule(self, group):
        return [LookaheadMomentum()]

    def _shift(self, sign: float, only_without_grad: bool = False) -> None:
        for group in self.param_groups:
            scale = sign * float(group["lr"]) * float(group["momentum"])
            for p in group["params"]:
                if only_without_grad and p.grad is not None:
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
            # Params the closure gave no gradient do not step: move them back now.
            self._shift(-1.0, only_without_grad=True)
            self._engine.step()
        return loss
