"""NAdam."""

from __future__ import annotations

from typing import Any

from ..rules import EMAOfSquares, NesterovEMA
from .base import RuleOptimizer


class NAdam(RuleOptimizer):
    r"""NAdam (Dozat 2016): Adam with Nesterov momentum.

    .. math::
        \mu_t = \beta_1\,(1 - \tfrac12\,0.96^{t\psi}),\quad
        w \leftarrow w - \eta\,\frac{\frac{1-\mu_t}{1-\prod_{i\le t}\mu_i}\,g_t
              + \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i}\,m_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    Same arguments, defaults, state (``step``, ``mu_product``, ``exp_avg``,
    ``exp_avg_sq``) and numbers as ``torch.optim.NAdam``. ``momentum_decay=math.inf``
    turns the schedule off (:math:`\mu_t = \beta_1`): the plain Nadam, Adam with
    Nesterov momentum as the notes describe it.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
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
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
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
        return [NesterovEMA(), EMAOfSquares()]
