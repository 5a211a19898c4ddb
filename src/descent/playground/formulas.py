"""Each optimizer's update, line by line, as descent runs it: the formulas the
playground writes beside the motion, with the current numbers put in.

This module is the one source: the section "Each optimizer's update, as the playground
writes it" of ``docs/conventions.md`` is generated from it (``python -m
descent.playground.formulas`` prints it; a test holds the doc to it), and ``row``
names the row of that doc's tables that gives the same update in the notes' own
symbols.

The symbols are the notes' framework's: ``g`` the gradient, ``θ`` the parameters,
``t`` the step, the first and second moments under the names of
:data:`~descent.playground.symbols.STATE`, and the hyperparameters under the catalog's
symbols. The formulas are those of each optimizer at the playground's settings (no
weight decay except AdamW's knob, no dampening, not centered).

Putting numbers in is substitution only: a symbol on the left of ``←`` gets its value
after the step, one on the right its value before, unless an earlier line assigned it
(the notes' pseudo-code order). Nothing is evaluated: a derived quantity such as m̂ is
shown by its definition with the numbers in it, and θ's new value is the one the
optimizer produced.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from .. import catalog
from .symbols import STATE

_ADAM_MOMENTS = ("m ← β₁·m + (1 − β₁)·g", "v ← β₂·v + (1 − β₂)·g²")
_ADAM_STEP = ("m̂ = m/(1 − β₁ᵗ),  v̂ = v/(1 − β₂ᵗ)", "θ ← θ − η·m̂/(√v̂ + ε)")


@dataclass(frozen=True)
class Formula:
    lines: tuple[str, ...]
    #: the "descent call" cell of the docs/conventions.md row with the notes' form
    row: str | None = None


FORMULAS: dict[str, Formula] = {
    "sgd": Formula(("θ ← θ − η·g",), "`SGD(p, lr=η)`"),
    "momentum": Formula(("b ← μ·b + g", "θ ← θ − η·b"), "`SGD(p, lr=η, momentum=γ)`"),
    "nag": Formula(("b ← μ·b + g", "θ ← θ − η·(g + μ·b)"), "`SGD(p, lr=η, momentum=μ, nesterov=True)`"),
    "adagrad": Formula(("v ← v + g²", "θ ← θ − η·g/(√v + ε)"), "`Adagrad(p, lr=η, eps=1e-7)`"),
    "adadelta": Formula(
        (
            "v ← ρ·v + (1 − ρ)·g²",
            "Δ = √(E[Δ²] + ε)/√(v + ε)·g",
            "E[Δ²] ← ρ·E[Δ²] + (1 − ρ)·Δ²",
            "θ ← θ − η·Δ",
        ),
        "`Adadelta(p, lr=1.0, rho=ρ, eps=ε)`",
    ),
    "rmsprop": Formula(
        ("v ← α·v + (1 − α)·g²", "θ ← θ − η·g/(√v + ε)"), "`RMSprop(p, lr=η, alpha=ρ, eps=ε)`"
    ),
    "adam": Formula((*_ADAM_MOMENTS, *_ADAM_STEP), "`Adam(p, lr=η, betas=(β₁, β₂), eps=ε)`"),
    "nadam": Formula(
        (
            "μₜ = β₁·(1 − ½·0.96^(t·ψ)),  μₜ₊₁ = β₁·(1 − ½·0.96^((t + 1)·ψ))",
            "Πμ ← Πμ·μₜ",
            *_ADAM_MOMENTS,
            "v̂ = v/(1 − β₂ᵗ)",
            "θ ← θ − η·(μₜ₊₁·m/(1 − Πμ·μₜ₊₁) + (1 − μₜ)·g/(1 − Πμ))/(√v̂ + ε)",
        ),
        "`NAdam(p, lr=η)` (ψ = `momentum_decay` = 0.004)",
    ),
    "adamw": Formula(
        ("θ ← θ·(1 − η·λ)", *_ADAM_MOMENTS, *_ADAM_STEP),
        "`AdamW(p, weight_decay=λ)` or `Adam(p, weight_decay=λ, decoupled_weight_decay=True)`",
    ),
    "amsgrad": Formula(
        (*_ADAM_MOMENTS, "vₘₐₓ ← max(vₘₐₓ, v)", "m̂ = m/(1 − β₁ᵗ),  v̂ = vₘₐₓ/(1 − β₂ᵗ)", _ADAM_STEP[1]),
        "`Adam(p, amsgrad=True)`",
    ),
    "adamax": Formula((_ADAM_MOMENTS[0], "v ← max(β₂·v, |g| + ε)", "θ ← θ − η/(1 − β₁ᵗ)·m/v")),
    "radam": Formula(
        (
            *_ADAM_MOMENTS,
            "ρ∞ = 2/(1 − β₂) − 1,  ρₜ = ρ∞ − 2·t·β₂ᵗ/(1 − β₂ᵗ),  m̂ = m/(1 − β₁ᵗ)",
            "rₜ = √((ρₜ − 4)(ρₜ − 2)ρ∞/((ρ∞ − 4)(ρ∞ − 2)ρₜ))",
            "θ ← θ − η·m̂·(rₜ·√(1 − β₂ᵗ)/(√v + ε) if ρₜ > 5 else 1)",
        )
    ),
    "lion": Formula(("θ ← θ − η·sign(β₁·m + (1 − β₁)·g)", "m ← β₂·m + (1 − β₂)·g")),
    "ema": Formula(("m ← β·m + (1 − β)·g", "θ ← θ − η·m"), "`EMAMomentum(p, lr=η, beta=β₁)`"),
    # the playground's point is a vector: Adafactor's unfactored second moment
    "adafactor": Formula(
        (
            "β̂₂ₜ = 1 − t^τ,  ρₜ = min(η, 1/√t)",
            "v ← β̂₂ₜ·v + (1 − β̂₂ₜ)·g²",
            "u = g/√v,  û = u/max(1, RMS(u))",
            "θ ← θ − max(10⁻³, RMS(θ))·ρₜ·û",
        )
    ),
}

#: Symbols of the step itself: the parameters, the gradient, the step number.
_OWN = {"θ": {"src": "param"}, "g": {"src": "grad"}, "t": {"src": "step"}}


def symbols(entry: catalog.Entry) -> dict[str, dict[str, Any]]:
    """Every symbol ``entry``'s formula may use, with where its value comes from."""
    out: dict[str, dict[str, Any]] = dict(_OWN)
    defaults = entry.defaults
    for name, value in defaults.items():
        sym = catalog.symbol(name)
        if name == "lr":
            out["η"] = {"src": "hyper", "name": "lr"}
        elif name == "eps":
            out["ε"] = {"src": "hyper", "name": "eps"}
        elif name == "momentum_decay":
            out["ψ"] = {"src": "hyper", "name": name}
        elif isinstance(value, tuple):
            for i in range(len(value)):
                out[f"{sym}{'₁₂₃'[i]}"] = {"src": "hyper", "name": name, "index": i}
        elif sym != name:
            out[sym] = {"src": "hyper", "name": name}
    for key, moment in STATE.items():
        out.setdefault(moment.symbol, {"src": "state", "key": key, "candidates": []})
    return out


def _free(ch: str) -> bool:
    """A character that may sit next to a symbol: not part of a longer name."""
    return not (ch.isascii() and (ch.isalnum() or ch == "_")) and not unicodedata.category(ch).startswith("M")


def tokenize(line: str, names: list[str]) -> list[Any]:
    """``line`` as text pieces and symbol names (longest name first, whole words only)."""
    names = sorted(names, key=len, reverse=True)
    out: list[Any] = []
    text, i = "", 0
    while i < len(line):
        hit = next(
            (
                n
                for n in names
                if line.startswith(n, i)
                and (i == 0 or _free(line[i - 1]))
                and (i + len(n) == len(line) or _free(line[i + len(n)]))
            ),
            None,
        )
        if hit is None:
            text += line[i]
            i += 1
            continue
        if text:
            out.append(text)
            text = ""
        out.append({"sym": hit})
        i += len(hit)
    if text:
        out.append(text)
    return out


def template(entry: catalog.Entry, state_keys: list[str] | None = None) -> dict[str, Any] | None:
    """``entry``'s formula as lines of text and symbols, each symbol marked with where
    its value comes from and whether it is read before (``"old"``) or after
    (``"new"``) the step; ``None`` when the catalog entry has no formula here.
    ``state_keys``: the optimizer's state keys (a symbol names the one it holds)."""
    formula = FORMULAS.get(entry.key)
    if formula is None:
        return None
    table = symbols(entry)
    held = {STATE[k].symbol: k for k in (state_keys or []) if k in STATE}
    assigned: set[str] = set()
    lines = []
    for line in formula.lines:
        arrow = line.find("←")
        pieces = tokenize(line, list(table))
        pos, out, targets = 0, [], set()
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                pos += len(piece)
                continue
            name = piece["sym"]
            source = dict(table[name])
            if source["src"] == "state":
                if name not in held:  # a symbol this optimizer does not keep: text only
                    out.append(name)
                    pos += len(name)
                    continue
                source = {"src": "state", "key": held[name]}
            left = arrow >= 0 and pos < arrow
            source["when"] = "new" if left or name in assigned else "old"
            if left:
                targets.add(name)
            out.append({"sym": name, **source})
            pos += len(name)
        assigned |= targets
        lines.append(out)
    return {"lines": lines, "row": formula.row}


def markdown() -> str:
    """The docs section generated from :data:`FORMULAS` (``docs/conventions.md``)."""
    out = [
        "| optimizer | update, as descent runs it | the notes' form: row of the tables above |",
        "|---|---|---|",
    ]
    for entry in catalog.ENTRIES:
        formula = FORMULAS.get(entry.key)
        if formula is None:
            continue
        update = "<br>".join("`" + line.replace("|", "\\|") + "`" for line in formula.lines)
        out.append(f"| {entry.label} (`{entry.key}`) | {update} | {formula.row or '—'} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
