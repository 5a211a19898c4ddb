"""Building a new optimizer from rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..rules.base import Transform
from .base import RuleOptimizer
from .validation import COMMON, Check


def compose(
    name: str,
    *transforms: Transform,
    defaults: Mapping[str, Any],
    rule: Callable[[Mapping[str, Any]], Sequence[Transform]] | None = None,
    flags: Sequence[str] | None = None,
    checks: Mapping[str, Check] | None = None,
    state_step: bool = True,
    decoupled: bool = False,
    doc: str | None = None,
) -> type[RuleOptimizer]:
    """Make a ``torch.optim.Optimizer`` class from rules.

    The class takes ``params``, ``lr`` and every key of ``defaults`` as keyword
    arguments (plus ``weight_decay`` and ``maximize``, which every optimizer has), and
    gets everything a named optimizer gets: param groups, ``state_dict``, schedulers,
    hooks and the fused engine. ``transforms`` are the moment rules between the
    gradient and the step; pass ``rule=`` instead to choose them per param group
    (``flags`` then names the group keys the choice depends on; by default every
    boolean hyperparameter). ``decoupled=True`` makes weight decay decoupled.
    Whole-tensor transforms (``rules.Orthogonalize``, ``rules.FactoredSecondMoment``)
    compose with the elementwise ones: the optimizer then steps same-shape params as
    batches (see ``descent.engine.matrix``).

    Example — the notes' RMSProp with momentum on the raw gradient, in three lines::

        RMSMomentum = descent.compose(
            "RMSMomentum", rules.HeavyBall(dampening=lambda g: 0.0),
            rules.EMAOfSquares(beta="alpha", bias_correction=False),
            defaults={"lr": 1e-2, "momentum": 0.9, "alpha": 0.99, "eps": 1e-8})
    """
    if rule is not None and transforms:
        raise TypeError("compose() takes transforms or rule=, not both")
    for tr in transforms:
        if not isinstance(tr, Transform):
            raise TypeError(f"compose() expects descent.rules transforms, got {tr!r}")
    hyper: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.0, "maximize": False, **defaults}
    if flags is None:
        flags = [k for k, v in hyper.items() if isinstance(v, bool)]
    fixed = tuple(transforms)

    def __init__(
        self,
        params: Any,
        lr: float = hyper["lr"],
        *,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
        **kw: Any,
    ):
        unknown = sorted(set(kw) - set(hyper))
        if unknown:
            raise TypeError(f"{name}() got unexpected keyword argument(s): {', '.join(unknown)}")
        RuleOptimizer.__init__(
            self,
            params,
            {**hyper, "lr": lr, **kw},
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )

    def _rule(self, group: Mapping[str, Any]) -> Sequence[Transform]:
        return rule(group) if rule is not None else fixed

    namespace = {
        "__init__": __init__,
        "rule": _rule,
        "flags": tuple(dict.fromkeys((*RuleOptimizer.flags, *flags))),
        "checks": {**COMMON, **(checks or {})},
        "state_step": state_step,
        # a rule chosen per group may hold a whole-tensor transform: such groups step by shape
        "whole_rules": rule is not None or any(t.whole for t in fixed),
        "decoupled_default": decoupled,
        "__doc__": doc or f"{name}: " + " → ".join(repr(t) for t in fixed),
        "__qualname__": name,
    }
    return type(name, (RuleOptimizer,), namespace)
