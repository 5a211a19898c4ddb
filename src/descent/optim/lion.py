"""Lion."""

from __future__ import annotations

from typing import Any

from ..rules import Lion as LionRule
from .base import RuleOptimizer


class Lion(RuleOptimizer):
    r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    .. math::
        w \leftarrow w\,(1-\eta\lambda) - \eta\,\mathrm{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t),\qquad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    Defaults from the paper: ``lr=1e-4``, ``betas=(0.9, 0.99)``; weight decay is
    decoupled. State: ``exp_avg``. Lion's updates have unit size per coordinate, so
    its lr is typically 3–10× smaller than AdamW's and its weight decay larger.
    """

    state_step = False
    decoupled_default = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
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
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
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
        return [LionRule()]
