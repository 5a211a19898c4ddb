"""Adamax."""

from __future__ import annotations

from typing import Any

from ..rules import EMA, InfinityNorm
from .base import RuleOptimizer


class Adamax(RuleOptimizer):
    r"""Adamax (Kingma & Ba 2015, §7.1), Adam with the infinity norm.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
        u_t = \max(\beta_2 u_{t-1},\ |g_t| + \epsilon),\quad
        w \leftarrow w - \frac{\eta}{1-\beta_1^t}\,\frac{m_t}{u_t}

    Same arguments, defaults, state (``step``, ``exp_avg``, ``exp_inf``) and numbers as
    ``torch.optim.Adamax``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
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
        return [EMA(fold_lr=True), InfinityNorm()]
