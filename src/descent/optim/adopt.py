"""ADOPT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..rules.adopt import ADOPT as ADOPTRule
from ..rules.adopt import quarter_power
from .base import RuleOptimizer
from .validation import COMMON, flag


class ADOPT(RuleOptimizer):
    r"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any β₂ with
    the Optimal Rate").

    .. math::
        v_0 = g_0^2,\qquad
        m_t = \beta_1 m_{t-1}
            + (1-\beta_1)\,\mathrm{clip}\Big(\frac{g_t}{\max(\sqrt{v_{t-1}},\epsilon)},\ c_t\Big),\qquad
        w \leftarrow w - \eta\,m_t,\qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2

    The first step only initializes :math:`v`. Arguments, defaults and numbers of the
    reference implementation (iShohei220/adopt): ``betas=(0.9, 0.9999)``, ``eps=1e-6``,
    ``clip_lambda`` (a function of the step count, default :math:`c_t = t^{1/4}`;
    ``None`` for the unclipped Algorithm 1), ``decouple=True`` for decoupled weight decay
    (else L2). State: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    decoupled_key = "decouple"
    flags = (*RuleOptimizer.flags, "decouple")
    checks = {**COMMON, "decouple": flag("decouple")}

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_lambda: Callable[[float], float] | None = quarter_power,
        weight_decay: float = 0.0,
        decouple: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        if clip_lambda is not None and not callable(clip_lambda):
            raise TypeError(f"Invalid clip_lambda: expected a function of the step, or None: {clip_lambda!r}")
        #: as in the reference, a function and so not a param-group key (it would not pickle)
        self.clip_lambda = clip_lambda
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decouple": decouple,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
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
        return [ADOPTRule(clip=getattr(self, "clip_lambda", quarter_power))]
