"""Schedule-Free AdamW and SGD, with the ``train()`` / ``eval()`` switch they need."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..rules import EMAOfSquares
from ..rules.schedule_free import ScheduleFree
from .base import RuleOptimizer
from .validation import COMMON, nonnegative, number


def _momentum(value: Any) -> None:
    if not 0.0 < number("momentum value", value) < 1.0:
        raise ValueError(f"Momentum must be between 0 and 1 exclusive: {value}")


class ScheduleFreeOptimizer(RuleOptimizer):
    """The mode switch of a Schedule-Free optimizer.

    While training, the params hold y, where gradients are taken; ``eval()`` moves them
    to x, the average the method converges on (evaluate, test and checkpoint there), and
    ``train()`` moves them back. Call ``train()`` before the first step and ``eval()``
    before evaluating, as the reference implementation requires; a step in eval mode
    raises. The mode is the param groups' ``train_mode``.
    """

    #: the group key of y's interpolation coefficient β (y = (1 − β)·z + β·x)
    beta_key: tuple[str, int] | str = ("betas", 0)

    def _beta(self, group: dict[str, Any]) -> float:
        key = self.beta_key
        return float(group[key[0]][key[1]] if isinstance(key, tuple) else group[key])

    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            beta = self._beta(group)
            if beta == 0 and not to_train:
                raise ValueError(
                    f"{type(self).__name__}: with {self.beta_key} = 0 the params are z itself and the "
                    "average x is not kept, so there is no point to switch to"
                )
            # y = x + (1 − β)(z − x);  x = y + (1 − 1/β)(z − y)
            weight = 1 - beta if to_train else 1 - 1 / beta
            pairs = [(p, self.state[p]["z"]) for p in group["params"] if "z" in self.state.get(p, {})]
            if pairs:
                torch._foreach_lerp_([p.data for p, _ in pairs], [z.to(p.device) for p, z in pairs], weight)
            group["train_mode"] = to_train

    def train(self) -> None:
        """Move the params to y, where the next gradients are taken."""
        self._move(True)

    def eval(self) -> None:
        """Move the params to x, the averaged point to evaluate or save."""
        self._move(False)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Also a checkpoint of the reference implementation, which counts steps (``k``)
        and keeps ``lr_max`` and ``weight_sum`` per param group: each param's state gets
        them, under the same names."""
        groups = state_dict.get("param_groups", [])
        if any("k" in g for g in groups):
            state_dict = {**state_dict, "state": dict(state_dict.get("state", {}))}
            for group in groups:
                for pid in group["params"]:
                    st = state_dict["state"].get(pid)
                    if st is not None and "step" not in st:
                        st = state_dict["state"][pid] = dict(st)
                        st["step"] = torch.tensor(float(group["k"]))
                        for key in ("lr_max", "weight_sum"):
                            st[key] = torch.tensor(float(group[key]), dtype=torch.float64)
            groups = [{k: v for k, v in g.items() if k not in _REFERENCE_ONLY} for g in groups]
            state_dict["param_groups"] = groups
        super().load_state_dict(state_dict)

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        idle = [i for i, g in enumerate(self.param_groups) if not g["train_mode"]]
        if idle:
            raise RuntimeError(
                f"{type(self).__name__}.step() called in eval mode (param group {idle[0]}): call "
                "optimizer.train() before training steps and optimizer.eval() before evaluating"
            )
        return super()._step(closure)


#: group keys of the reference implementation that descent keeps per param (or not at all)
_REFERENCE_ONLY = ("k", "lr_max", "weight_sum", "scheduled_lr")


def _schedule_checks(extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **COMMON,
        "warmup_steps": nonnegative("warmup_steps value"),
        "r": nonnegative("r value"),
        "weight_lr_power": nonnegative("weight_lr_power value"),
        **extra,
    }


class AdamWScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"): no
    learning-rate schedule, an average of the iterates instead.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
        z_{t+1} = z_t - \gamma_t\Big(\frac{g_t}{\sqrt{v_t/(1-\beta_2^t)}+\epsilon} + \lambda y_t\Big),\quad
        x_{t+1} = (1-c_{t+1})\,x_t + c_{t+1} z_{t+1},\quad y_{t+1} = (1-\beta_1) z_{t+1} + \beta_1 x_{t+1}

    with :math:`\gamma_t = \eta\min(1, t/T_{warmup})` and
    :math:`c_{t+1} = w_t/\sum_{i\le t} w_i`, :math:`w_t = t^r(\max_{i\le t}\gamma_i)^p`
    (see :class:`descent.rules.schedule_free.ScheduleFree`). Arguments and defaults of the
    reference implementation's ``AdamWScheduleFree`` (facebookresearch/schedule_free,
    ``schedulefree`` 1.4), and its numbers. State: ``z``, ``exp_avg_sq`` (as the reference
    names them), ``step``, ``lr_max`` and ``weight_sum`` (which the reference keeps per
    group; here per tensor, so a param without a gradient neither moves nor advances).
    Call ``train()`` before training and ``eval()`` before evaluating.
    """

    decoupled_default = True
    checks = _schedule_checks({})

    def __init__(
        self,
        params: Any,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
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
            "warmup_steps": warmup_steps,
            "r": r,
            "weight_lr_power": weight_lr_power,
            "train_mode": False,
            "maximize": maximize,
            "foreach": foreach,
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
        decay = bool(group["weight_decay"])
        return [EMAOfSquares(), ScheduleFree(beta=("betas", 0), decoupled=decay)]


class SGDScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-Free SGD (Defazio et al. 2024): the Schedule-Free step on the gradient,

    .. math::
        z_{t+1} = z_t - \gamma_t (g_t + \lambda y_t),\quad
        x_{t+1} = (1-c_{t+1})\,x_t + c_{t+1} z_{t+1},\quad y_{t+1} = (1-\mu) z_{t+1} + \mu x_{t+1}

    (see :class:`AdamWScheduleFree` for γ and c; μ is ``momentum``). Arguments, defaults
    (``lr=1.0``, ``momentum=0.9``) and numbers of the reference implementation's
    ``SGDScheduleFree``; weight decay is added to the gradient at y, as there. State:
    ``z``, ``step``, ``lr_max``, ``weight_sum``. Call ``train()`` / ``eval()``.
    """

    beta_key = "momentum"
    checks = _schedule_checks({"momentum": _momentum})

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
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
            "warmup_steps": warmup_steps,
            "r": r,
            "weight_lr_power": weight_lr_power,
            "train_mode": False,
            "maximize": maximize,
            "foreach": foreach,
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
        return [ScheduleFree(beta="momentum")]
