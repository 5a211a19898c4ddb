"""Adam and AdamW."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..rules import EMA, EMAOfSquares
from .base import RuleOptimizer


def _torch_checks(lr: Any, betas: Any, foreach: bool | None, capturable: bool) -> None:
    """torch.optim.Adam's own refusals, in its order: a tensor lr or beta where its
    foreach path cannot take one, and betas that mix a float and a tensor."""
    if isinstance(lr, Tensor) and foreach and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        return  # the common check names the bad value
    if not (all(isinstance(b, float) for b in betas) or all(isinstance(b, Tensor) for b in betas)):
        raise ValueError("betas must be either both floats or both Tensors")
    for i, b in enumerate(betas):
        if isinstance(b, Tensor) and foreach and not capturable:
            raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")


class Adam(RuleOptimizer):
    r"""Adam (Kingma & Ba 2015); AMSGrad (Reddi, Kale & Kumar 2018) with ``amsgrad=True``.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,\quad
        w \leftarrow w - \eta\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    AMSGrad replaces :math:`v_t` by :math:`\max_{i\le t} v_i`. Same arguments, defaults,
    state (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) and numbers as
    ``torch.optim.Adam``. ``eps_inside=True`` gives :math:`\sqrt{\hat v_t + \epsilon}`.
    """

    flags = (*RuleOptimizer.flags, "amsgrad", "eps_inside")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        eps_inside: bool = False,
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
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        if eps_inside is not False:  # only then a group key, so groups match torch.optim's
            defaults["eps_inside"] = eps_inside
        _torch_checks(lr, betas, foreach, capturable)
        super().__init__(
            params,
            defaults,
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )

    def check_sparse(self, group: Mapping[str, Any]) -> None:
        raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")

    def rule(self, group):
        return [
            EMA(fold_lr=True),
            EMAOfSquares(amsgrad=bool(group["amsgrad"]), eps_inside=bool(group.get("eps_inside", False))),
        ]


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    .. math:: w \leftarrow w\,(1 - \eta\lambda) - \eta\,\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    Same arguments, defaults (``weight_decay=1e-2``), state and numbers as
    ``torch.optim.AdamW``.
    """

    decoupled_default = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        eps_inside: bool = False,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            eps_inside=eps_inside,
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )
