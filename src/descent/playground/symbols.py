"""What the playground shows of an optimizer, in one table each: its state buffers as
the notes name them, and its hyperparameters as sliders.

The notes' framework (001 §2) writes every optimizer as a first moment
``m_t = φ(g₁ … g_t)``, a second moment ``v_t = ψ(g₁ … g_t)`` and the step
``θ ← θ − η·m_t/√v_t``. descent's classes keep torch.optim's state keys; :data:`STATE`
maps each key to the notes' symbol and role, so the playground reads the moments from
``optimizer.state[p]`` (the numbers the step really used) and never recomputes them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .. import catalog


@dataclass(frozen=True)
class Moment:
    #: the symbol in the formulas (``descent.playground.formulas``) and on the page
    symbol: str
    #: "first" (drawn as an arrow), "second" (drawn as a box around the point) or
    #: "other" (shown as numbers only)
    role: str
    #: what it is, in the notes' words
    meaning: str
    #: a second moment of squares is drawn with half-sides √v (gradient units); one that
    #: is already a magnitude (Adamax's ∞-norm) with half-sides v
    squared: bool = True


#: torch.optim's state keys → the notes' quantities. ONE table for every optimizer.
STATE: dict[str, Moment] = {
    "momentum_buffer": Moment(
        "b", "first", "heavy-ball buffer b ← μ·b + g; the notes' V = η·b (000, 001 §3, 002)"
    ),
    "exp_avg": Moment("m", "first", "EMA of the gradients, m ← β₁·m + (1 − β₁)·g"),
    "grad_avg": Moment("ḡ", "other", "EMA of the gradients (centered RMSProp subtracts ḡ²)"),
    "exp_avg_sq": Moment("v", "second", "EMA of the squared gradients, v ← β₂·v + (1 − β₂)·g²"),
    "square_avg": Moment("v", "second", "EMA of the squared gradients, the notes' cache / E[g²]"),
    "sum": Moment("v", "second", "sum of the squared gradients, the notes' h (000) / υ (001 §5) / G (002)"),
    "exp_inf": Moment("v", "second", "∞-norm of the gradients, v ← max(β₂·v, |g| + ε)", squared=False),
    "max_exp_avg_sq": Moment("vₘₐₓ", "second", "the largest v so far (AMSGrad)"),
    "acc_delta": Moment("E[Δ²]", "other", "EMA of the squared steps (AdaDelta's numerator)"),
    "mu_product": Moment("Πμ", "other", "product of NAdam's momentum schedule μ₁ … μₜ"),
    "lr_max": Moment("ηₘₐₓ", "other", "the largest warmed-up learning rate so far (it weights the average)"),
    "weight_sum": Moment("Σw", "other", "sum of the averaging weights: x is y's running weighted mean"),
    "variance": Moment(
        "v", "second", "Adafactor's EMA of g² for a vector (a matrix keeps a row and a column EMA)"
    ),
    "row_var": Moment("r", "other", "Adafactor's EMA of the row means of g² (a matrix's v̂ = r·cᵀ / mean(r))"),
    "col_var": Moment("c", "other", "Adafactor's EMA of the column means of g²"),
    "z": Moment("z", "other", "Schedule-Free's base sequence z ← z − η·g (y interpolates x and z)"),
}


@dataclass(frozen=True)
class Slider:
    symbol: str
    name: str
    lo: float
    hi: float
    #: log scale (lr, ε); ``zero`` adds 0 below the log range (weight decay)
    log: bool = False
    zero: bool = False
    #: the upper end is excluded (β < 1)
    open_hi: bool = False


#: Hyperparameters a learner can set, by group key; ``betas`` is a pair of these.
SLIDERS: dict[str, Slider] = {
    "lr": Slider("η", "learning rate", 1e-5, 1e2, log=True),
    "momentum": Slider("μ", "momentum", 0.0, 1.0),
    "betas": Slider("β", "betas", 0.0, 1.0, open_hi=True),
    "beta": Slider("β", "momentum β", 0.0, 1.0, open_hi=True),
    "rho": Slider("ρ", "decay ρ", 0.0, 1.0),
    "alpha": Slider("α", "decay α", 0.0, 1.0),
    "eps": Slider("ε", "epsilon", 1e-12, 1.0, log=True, zero=True),
    "weight_decay": Slider("λ", "weight decay", 1e-5, 1.0, log=True, zero=True),
}


def exposed(entry: catalog.Entry) -> list[str]:
    """The settings of ``entry`` a learner sets: the learning rate, the catalog's knob,
    and any other slider setting the optimizer uses (switched on in its defaults), so
    plain SGD gets no momentum slider and Adam gets its betas and ε."""
    names = ["lr"]
    if entry.knob is not None:
        names.append(entry.knob[0])
    defaults = entry.defaults
    for name in SLIDERS:
        if name in names or name not in defaults:
            continue
        value = defaults[name]
        if (
            name == "eps"
            or (isinstance(value, tuple) and any(value))
            or (not isinstance(value, tuple) and value)
        ):
            names.append(name)
    return names


def setting(entry: catalog.Entry, name: str) -> Any:
    """The default value of a setting, as JSON (a tuple becomes a list)."""
    value = entry.default(name)
    return list(value) if isinstance(value, tuple) else float(value)


def check(name: str, value: Any, where: str) -> Any:
    """``value`` for slider ``name`` as the class takes it; ``ValueError`` naming it when
    it is not a finite number in the slider's range (a pair for ``betas``)."""
    spec = SLIDERS[name]
    if name == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{where}: betas = {value!r} is not a pair of numbers")
        return tuple(_number(f"betas[{i}]", v, spec, where) for i, v in enumerate(value))
    return _number(name, value, spec, where)


def _number(name: str, value: Any, spec: Slider, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {name} = {value!r} is not a number")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{where}: {name} = {value!r} is not a finite number")
    lo = 0.0 if spec.zero or not spec.log else spec.lo
    too_low = x <= 0 if (spec.log and not spec.zero) else x < lo
    too_high = x >= spec.hi if spec.open_hi else x > spec.hi
    if too_low or too_high:
        low = "(0" if spec.log and not spec.zero else f"[{lo:g}"
        high = f"{spec.hi:g})" if spec.open_hi else f"{spec.hi:g}]"
        raise ValueError(f"{where}: {name} = {value!r} is out of range {low}, {high}")
    return x


def describe() -> dict[str, Any]:
    """The tables, as JSON for the page."""
    return {
        "state": {k: asdict(m) for k, m in STATE.items()},
        "sliders": {k: asdict(s) for k, s in SLIDERS.items()},
    }
