"""Adafactor, a drop-in for torch.optim.Adafactor."""

from __future__ import annotations

from typing import Any

from ..rules.adafactor import FactoredSecondMoment, RelativeStep
from .base import RuleOptimizer
from .validation import COMMON, Check, number


def _eps(value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Invalid eps: expected a pair (epsilon1 or None, epsilon2), got {value!r}")
    if value[0] is not None and not number("epsilon1", value[0]) >= 0.0:
        raise ValueError(f"epsilon1 should be >= 0 but is: {value[0]}")
    if not number("epsilon2", value[1]) >= 0.0:
        raise ValueError(f"epsilon2 should be >= 0 but is: {value[1]}")


def _bound(label: str, ok, relation: str) -> Check:
    def check(value: Any) -> None:
        if not ok(number(label, value, "lr")):
            raise ValueError(f"{label} should be {relation} but is: {value}")

    return check


ADAFACTOR_CHECKS: dict[str, Check] = {
    **COMMON,
    "lr": _bound("Learning rate", lambda v: v >= 0.0, ">= 0"),
    "beta2_decay": _bound("beta2_decay", lambda v: v <= 0.0, "<= 0"),
    "eps": _eps,
    "d": _bound("Clipping threshold d", lambda v: v >= 1.0, ">= 1"),
    "weight_decay": _bound("weight_decay", lambda v: v >= 0.0, ">= 0"),
}


class Adafactor(RuleOptimizer):
    r"""Adafactor (Shazeer & Stern 2018): a second moment factored into row and column
    means for matrices, a step relative to the param's RMS, and update clipping.

    .. math::
        \hat v_t = \frac{R_t C_t}{\max(\bar R_t, \epsilon_1)},\quad
        U_t = \frac{g_t}{\max(\sqrt{\hat v_t}, \epsilon_1)},\quad
        w \leftarrow w(1-\eta\lambda) - \max(\epsilon_2, \mathrm{RMS}(w))
            \min(\eta, t^{-1/2})\,\frac{U_t}{\max(1, \mathrm{RMS}(U_t)/d)}

    Same arguments, defaults (``lr=1e-2``, ``beta2_decay=-0.8``, ``eps=(None, 1e-3)``,
    ``d=1.0``, ``weight_decay=0.0``), errors, state (``step``; ``row_var`` (… × A × 1) and
    ``col_var`` (… × 1 × B) for a param of 2 dims or more, ``variance`` for a vector) and
    numbers as ``torch.optim.Adafactor``; checkpoints load either way. Same-shape params
    are stepped together, one batched reduction per moment.
    """

    whole_rules = True
    decoupled_default = True
    checks = ADAFACTOR_CHECKS

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "beta2_decay": beta2_decay,
            "eps": eps,
            "d": d,
            "weight_decay": weight_decay,
            "foreach": foreach,
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
        return [FactoredSecondMoment(), RelativeStep(decoupled=bool(group["weight_decay"]))]
