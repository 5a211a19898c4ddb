"""AdaGrad."""

from __future__ import annotations

from typing import Any

import torch

from ..engine.storage import scalar_dtype
from ..rules import SumOfSquares
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
    """

    flags = (*RuleOptimizer.flags, "eps_inside")

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
            "eps_inside": eps_inside,
        }
        super().__init__(params, defaults, flat=flat, compile=compile, skip_nonfinite=skip_nonfinite)
        # torch.optim.Adagrad creates its state up front; so does this, for parity.
        for group in self.param_groups:
            init = group["initial_accumulator_value"]
            for p in group["params"]:
                fill = complex(init, init) if p.is_complex() else init
                self.state[p]["step"] = torch.tensor(0.0, dtype=scalar_dtype())
                self.state[p]["sum"] = torch.full_like(p, fill, memory_format=torch.preserve_format)

    def rule(self, group):
        return [SumOfSquares(eps_inside=bool(group["eps_inside"]))]
