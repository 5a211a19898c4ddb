"""RAdam."""

from __future__ import annotations

from typing import Any

from ..rules import EMA, Rectified
from .base import RuleOptimizer


class RAdam(RuleOptimizer):
    r"""RAdam (Liu et al. 2020): Adam whose adaptive step is switched on, and rectified,
    once the variance of :math:`1/\sqrt{v_t}` is tractable (:math:`\rho_t > 5`).

    .. math::
        w \leftarrow w - \eta\,\hat m_t \cdot
        \begin{cases} r_t\,\sqrt{1-\beta_2^t}/(\sqrt{v_t}+\epsilon) & \rho_t > 5\\ 1 & \text{else}\end{cases}

    Same arguments, defaults, state (``step``, ``exp_avg``, ``exp_avg_sq``) and numbers
    as ``torch.optim.RAdam``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
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
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
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
        return [EMA(), Rectified()]
