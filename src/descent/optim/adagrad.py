"""AdaGrad."""

from __future__ import annotations

from typing import Any

import torch

from ..engine.kernels import warn
from ..engine.layout import scalar_dtype
from ..rules import SumOfSquares
from ..rules.base import Fixed
from .base import RuleOptimizer


class Adagrad(RuleOptimizer):
    r"""AdaGrad (Duchi, Hazan & Singer 2011).

    .. math::
        G_t = G_0 + \textstyle\sum_{i\le t} g_i^2,\qquad
        w \leftarrow w - \frac{\eta}{1 + (t-1)\,\text{lr\_decay}}\cdot\frac{g_t}{\sqrt{G_t} + \epsilon}

    Same arguments, defaults, state (``step``, ``sum``, created at construction) and
    numbers as ``torch.optim.Adagrad``. ``eps_inside=True`` puts ε under the root,
    :math:`g/\sqrt{G_t+\epsilon}`, as one of the notes writes it. The notes' NumPy code
    (``h += g*g; w -= lr*g/(sqrt(h) + 1e-7)``) is ``Adagrad(lr=lr, eps=1e-7)``.

    As in torch.optim, every param's ``sum`` starts at the constructor's
    ``initial_accumulator_value``, also in a group that sets its own value (a warning
    says so) and in groups added later.
    """

    flags = (*RuleOptimizer.flags, "eps_inside")
    sparse_grads = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        eps_inside: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
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
        # torch.optim.Adagrad creates its state up front; so does this, for parity.
        init = self.defaults["initial_accumulator_value"]
        for group in self.param_groups:
            for p in group["params"]:
                fill = complex(init, init) if p.is_complex() else init
                self.state[p]["step"] = torch.tensor(0.0, dtype=scalar_dtype())
                self.state[p]["sum"] = torch.full_like(p, fill, memory_format=torch.preserve_format)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        own = param_group.get("initial_accumulator_value", self.defaults["initial_accumulator_value"])
        if own != self.defaults["initial_accumulator_value"]:
            warn(
                f"descent: Adagrad ignores a param group's initial_accumulator_value={own}: as in "
                "torch.optim, every sum starts at the constructor's value "
                f"({self.defaults['initial_accumulator_value']}); pass it to the constructor instead"
            )

    def check_sparse(self, group):
        if group["weight_decay"] != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")

    def rule(self, group):
        # torch.optim fills every state sum from the constructor's value (self.defaults)
        initial = Fixed(float(self.defaults["initial_accumulator_value"]))
        return [SumOfSquares(initial=initial, eps_inside=bool(group.get("eps_inside", False)))]
