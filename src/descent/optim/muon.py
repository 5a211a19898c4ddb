"""Muon, a drop-in for torch.optim.Muon, and MuonAdamW: Muon for the hidden matrices and
AdamW for the rest of a model, in one optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..rules import EMA, EMAOfSquares
from ..rules.muon import ADJUST_LR, NS_COEFFICIENTS, NS_EPS, NS_STEPS, MuonMomentum, Orthogonalize, ns_dtype
from .base import RuleOptimizer
from .validation import COMMON, Check, number


def _at_least_zero(message: str) -> Check:
    """torch.optim.Muon's wording: ``momentum should be >= 0 but is: -1``."""

    def check(value: Any) -> None:
        if not number(message, value, "lr") >= 0.0:
            raise ValueError(f"{message} should be >= 0 but is: {value}")

    return check


def _adjust(value: Any) -> None:
    if value not in ADJUST_LR:
        raise ValueError(f"Adjust learning rate function {value} is not supported")


MUON_CHECKS: dict[str, Check] = {
    **COMMON,
    "lr": _at_least_zero("Learning rate"),
    "momentum": _at_least_zero("momentum"),
    "weight_decay": _at_least_zero("weight decay"),
    "eps": _at_least_zero("eps"),
    "adjust_lr_fn": _adjust,
    "ns_dtype": ns_dtype,
}


def _muon_rule(group: Mapping[str, Any]) -> list:
    return [MuonMomentum(nesterov=bool(group["nesterov"])), Orthogonalize()]


class Muon(RuleOptimizer):
    r"""Muon (Jordan et al. 2024): momentum orthogonalised by Newton–Schulz, for 2-D params.

    .. math::
        b_t = \mu b_{t-1} + (1-\mu) g_t,\quad
        \tilde b_t = (1-\mu) g_t + \mu b_t\ (\text{nesterov}),\quad
        w \leftarrow w(1-\eta\lambda) - \eta\, r(A,B)\,\mathrm{NS}_k(\tilde b_t)

    Same arguments, defaults (``lr=1e-3``, ``weight_decay=0.1``, ``momentum=0.95``,
    ``nesterov=True``, ``ns_coefficients=(3.4445, -4.7750, 2.0315)``, ``eps=1e-7``,
    ``ns_steps=5``, ``adjust_lr_fn=None``), errors (a param that is not 2-D is refused)
    and state (``momentum_buffer``) as ``torch.optim.Muon``; checkpoints load either way.

    ``ns_dtype`` (beyond torch): the precision of the Newton–Schulz iteration,
    ``"bfloat16"`` (torch's, the default) or ``"float32"`` (slower, and reproducible to
    float32 rounding, where bfloat16's 8-bit mantissa makes the update differ from
    torch's by about a percent). Same-shape matrices are orthogonalised together, one
    batched matmul per product (torch.optim.Muon loops over the tensors in Python).
    """

    state_step = False
    whole_rules = True
    decoupled_default = True
    flags = (*RuleOptimizer.flags, "nesterov")
    checks = MUON_CHECKS

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = NS_EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: str | torch.dtype = "bfloat16",
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        if ns_dtype != "bfloat16":  # only then a group key, so groups match torch.optim's
            defaults["ns_dtype"] = ns_dtype
        super().__init__(
            params,
            defaults,
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.ndim != 2:
                raise ValueError(
                    f"Muon only supports 2D parameters whereas we found a parameter with size: {p.size()}"
                )

    def rule(self, group):
        return _muon_rule(group)


#: The reference MuonWithAuxAdam's defaults for each kind of group (KellerJordan/Muon).
MUON_DEFAULTS = {
    "lr": 0.02,
    "momentum": 0.95,
    "nesterov": True,
    "ns_coefficients": NS_COEFFICIENTS,
    "eps": NS_EPS,
    "ns_steps": NS_STEPS,
    "adjust_lr_fn": None,
    "weight_decay": 0.0,
}
ADAMW_DEFAULTS = {"lr": 3e-4, "betas": (0.9, 0.95), "eps": 1e-10, "weight_decay": 0.0, "amsgrad": False}


def muon_param_groups(
    model: torch.nn.Module, *, head: str | torch.nn.Module | None = "last", flatten_conv: bool = False
) -> list[dict[str, Any]]:
    """``model``'s params as MuonAdamW's two groups: ``use_muon=True`` for the hidden
    matrices, ``False`` for embeddings, the output head, biases, norms' gains and anything
    else not 2-D.

    ``head``: the output layer, kept on AdamW as the Muon authors advise: ``"last"`` (the
    last ``nn.Linear`` registered, a GPT's ``lm_head``), a submodule or its name, or
    ``None`` (no head). A weight tied to an embedding counts as the embedding.
    ``flatten_conv=True`` puts conv kernels (3-D and more) on Muon too, each
    orthogonalised as the ``out_channels × rest`` matrix (the reference does so); by
    default they go to AdamW.
    """
    modules = dict(model.named_modules())
    if head == "last":
        linears = [m for m in modules.values() if isinstance(m, torch.nn.Linear)]
        head = linears[-1] if linears else None
    elif isinstance(head, str):
        if head not in modules:
            raise ValueError(f"muon_param_groups: the model has no submodule named {head!r}")
        head = modules[head]
    aside = {
        id(p)
        for m in modules.values()
        if m is head or isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))
        for p in m.parameters(recurse=False)
    }
    hidden, rest = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        matrix = p.ndim == 2 or (flatten_conv and p.ndim > 2)
        (hidden if matrix and id(p) not in aside else rest).append(p)
    groups = []
    if hidden:
        groups.append({"params": hidden, "use_muon": True, **({"flatten": True} if flatten_conv else {})})
    if rest:
        groups.append({"params": rest, "use_muon": False})
    return groups


def _what(group: Any) -> str:
    return "a group without use_muon" if isinstance(group, dict) else type(group).__name__


class MuonAdamW(RuleOptimizer):
    r"""Muon for a model's hidden matrices and AdamW for everything else, as one optimizer:
    one ``step``, one ``state_dict``, and lr schedulers see every group.

    The recipe of the Muon authors (KellerJordan/Muon's ``MuonWithAuxAdam``; heavyball's
    ``MuonAdamW``): each param group says ``use_muon``. Pass a model (its params are split
    by :func:`muon_param_groups`) or such groups. A Muon group (keys and defaults of the
    reference: ``lr=0.02``, ``momentum=0.95``, ``weight_decay=0``, and torch.optim.Muon's
    ``nesterov``, ``ns_coefficients``, ``eps``, ``ns_steps``, ``adjust_lr_fn``) steps as
    :class:`Muon` does; an AdamW group (``lr=3e-4``, ``betas=(0.9, 0.95)``,
    ``eps=1e-10``, ``weight_decay=0``) as :class:`~descent.AdamW` does, in the flat engine.
    Keyword arguments change the defaults of each kind: Muon's by their names, AdamW's
    with an ``adamw_`` prefix (``adamw_lr``, ``adamw_betas`` …). A Muon group with
    ``flatten=True`` takes conv kernels (orthogonalised as ``out × rest`` matrices).
    State: ``momentum_buffer`` for Muon's params; ``step``, ``exp_avg``, ``exp_avg_sq``
    for AdamW's.
    """

    whole_rules = True
    decoupled_default = True
    flags = (*RuleOptimizer.flags, "use_muon", "nesterov", "amsgrad")
    checks = {**MUON_CHECKS, "eps": COMMON["eps"], "lr": COMMON["lr"], "weight_decay": COMMON["weight_decay"]}

    def __init__(
        self,
        params: Any,
        *,
        ns_dtype: str | torch.dtype = "bfloat16",
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
        **defaults: Any,
    ):
        muon = {k: defaults.pop(k) for k in list(defaults) if k in MUON_DEFAULTS}
        adamw = {
            k[6:]: defaults.pop(k) for k in list(defaults) if k[6:] in ADAMW_DEFAULTS and k[:6] == "adamw_"
        }
        if defaults:
            raise TypeError(f"MuonAdamW() got unexpected keyword argument(s): {', '.join(sorted(defaults))}")
        self._kinds = {True: {**MUON_DEFAULTS, **muon}, False: {**ADAMW_DEFAULTS, **adamw}}
        if ns_dtype != "bfloat16":
            self._kinds[True]["ns_dtype"] = ns_dtype
        if isinstance(params, torch.nn.Module):
            params = muon_param_groups(params)
        super().__init__(
            params,
            {},
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict) or "use_muon" not in param_group:
            raise ValueError(
                "MuonAdamW needs to know which params are hidden matrices: give it a model, or param "
                "groups that each say use_muon=True or False (descent.muon_param_groups(model) makes them); "
                f"got {_what(param_group)}"
            )
        kind = bool(param_group["use_muon"])
        super().add_param_group({**self._kinds[kind], **param_group})
        group = self.param_groups[-1]
        for p in group["params"]:
            if kind and not (p.ndim == 2 or (p.ndim > 2 and group.get("flatten"))):
                raise ValueError(
                    f"MuonAdamW: a use_muon group holds a param of shape {tuple(p.shape)}; Muon takes 2-D "
                    "matrices (conv kernels with flatten=True): put it in a use_muon=False group"
                )

    def steps_in_state(self, group):
        return not group["use_muon"]  # torch.optim.Muon keeps no step

    def rule(self, group):
        if group["use_muon"]:
            return _muon_rule(group)
        return [EMA(fold_lr=True), EMAOfSquares(amsgrad=bool(group["amsgrad"]))]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_kinds", {True: dict(MUON_DEFAULTS), False: dict(ADAMW_DEFAULTS)})
