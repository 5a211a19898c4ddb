"""Hyperparameter checks, with torch.optim's messages: each names the value it rejects."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from torch import Tensor

Check = Callable[[Any], None]


def number(label: str, value: Any, name: str | None = None) -> float:
    """``value`` as a float; a tensor must hold one element (torch.optim's message names
    it as ``name``, its argument: ``Tensor lr must be 1-element``)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name or label} must be 1-element, got shape {tuple(value.shape)}")
        return value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"Invalid {label}: expected a number, got {value!r} ({type(value).__name__})")
    return float(value)


def nonnegative(label: str, name: str | None = None) -> Check:
    """``0 ≤ value`` (NaN rejected)."""

    def check(value: Any) -> None:
        if not number(label, value, name) >= 0.0:
            raise ValueError(f"Invalid {label}: {value}")

    return check


def unit(label: str, closed: bool = False) -> Check:
    """``0 ≤ value < 1`` (or ``≤ 1`` when ``closed``)."""

    def check(value: Any) -> None:
        v = number(label, value)
        if not (0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0):
            raise ValueError(f"Invalid {label}: {value}")

    return check


def betas(value: Any) -> None:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {value!r}")
    for i, b in enumerate(value):
        if not 0.0 <= number(f"beta parameter at index {i}", b, f"betas[{i}]") < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {b}")


def flag(label: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"Invalid {label}: expected True or False, got {value!r}")

    return check


def optional_flag(label: str) -> Check:
    def check(value: Any) -> None:
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"Invalid {label}: expected True, False or None, got {value!r}")

    return check


def momentum_decay(value: Any) -> None:
    v = number("momentum_decay value", value)
    if not (v >= 0.0 or math.isinf(v)):
        raise ValueError(f"Invalid momentum_decay value: {value}")


#: The checks of hyperparameters that several optimizers share.
COMMON: dict[str, Check] = {
    "lr": nonnegative("learning rate", "lr"),
    "eps": nonnegative("epsilon value"),
    "weight_decay": nonnegative("weight_decay value"),
    "momentum": nonnegative("momentum value"),
    "dampening": nonnegative("dampening value"),
    "betas": betas,
    "maximize": flag("maximize"),
    "amsgrad": flag("amsgrad"),
    "nesterov": flag("nesterov"),
    "centered": flag("centered"),
    "decoupled_weight_decay": flag("decoupled_weight_decay"),
    "eps_inside": flag("eps_inside"),
    "capturable": flag("capturable"),
    "differentiable": flag("differentiable"),
    "foreach": optional_flag("foreach"),
    "fused": optional_flag("fused"),
    "lr_decay": nonnegative("lr_decay value"),
    "initial_accumulator_value": nonnegative("initial_accumulator_value value"),
    "alpha": nonnegative("alpha value"),
    "rho": unit("rho value", closed=True),
    "momentum_decay": momentum_decay,
}


def validate(values: Mapping[str, Any], checks: Mapping[str, Check]) -> None:
    """Run the check of every hyperparameter present in ``values``."""
    for key, value in values.items():
        check = checks.get(key)
        if check is not None:
            check(value)
