"""The optimizers the notes compare, by short name: every fact about each one that the
rest of the package needs — how to build it, its defaults (read from the class
signature), its label, colour and key hyperparameter with its symbol, its torch.optim
counterpart, and whether it is adaptive (read from its rule).

Landscapes, the arena, the benchmarks and the CLI all read this table, so ``momentum``
means the same optimizer, and is drawn in the same colour, everywhere.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from . import optim
from .optim import muon
from .rules import adafactor, adaptive, adopt, momentum

#: How a hyperparameter is written in legends and tables.
SYMBOLS = {
    "momentum": "μ",
    "betas": "β",
    "beta": "β",
    "rho": "ρ",
    "alpha": "α",
    "weight_decay": "λ",
    "beta2_decay": "τ",
    "adamw_ratio": "η_AdamW/η",
}


def symbol(name: str) -> str:
    """The symbol of a hyperparameter (its name when it has none)."""
    return SYMBOLS.get(name, name)


@functools.cache
def class_defaults(cls: type[Optimizer]) -> dict[str, Any]:
    """The keyword defaults of an optimizer class, from its signature."""
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@dataclass(frozen=True)
class Entry:
    key: str
    label: str
    cls: type[Optimizer]
    fixed: dict[str, Any] = field(default_factory=dict)
    #: a second hyperparameter to tune: (group key, candidate values)
    knob: tuple[str, tuple[Any, ...]] | None = None
    color: str = "#000000"
    note: str = ""
    #: built over a whole model, whose params it splits itself (MuonAdamW: the hidden
    #: matrices on one rule, the rest on another): the arena hands it the model; it has
    #: no trajectory of a lone point, so the landscapes and the playground leave it out
    model: bool = False
    #: keys of the param group its rule is read from (:attr:`rule`), beyond its defaults
    group: dict[str, Any] = field(default_factory=dict)
    #: turns the entry's settings into the class's arguments (a setting of the entry's own,
    #: such as a ratio between two learning rates, into what the class takes)
    translate: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        """Its settings when built with no arguments: the class defaults, then ``fixed``."""
        return {**class_defaults(self.cls), **self.fixed}

    @property
    def default_lr(self) -> float:
        return float(self.defaults["lr"])

    def default(self, name: str) -> Any:
        """The value of one setting when not given (``ValueError`` for an unknown one)."""
        try:
            return self.defaults[name]
        except KeyError:
            raise ValueError(f"{self.cls.__name__} has no setting {name!r}") from None

    @property
    def symbol(self) -> str | None:
        """The symbol of its key hyperparameter (``None`` without one)."""
        return None if self.knob is None else symbol(self.knob[0])

    @property
    def torch(self) -> type[Optimizer] | None:
        """The torch.optim class it is a drop-in for (same name), or ``None``."""
        found = getattr(torch.optim, self.cls.__name__, None)
        return found if isinstance(found, type) and issubclass(found, Optimizer) else None

    @property
    def rule(self) -> tuple[Any, ...]:
        """Its moment transforms (the rule, without Prepare and Descend) at its defaults.
        ``rule`` reads the group it is given and the constructor's ``defaults`` (as
        torch.optim does for Adagrad's initial sums), so a bare instance holding just
        those stands in: no optimizer, and no engine, is built for it."""
        bare = self.cls.__new__(self.cls)
        bare.defaults = dict(self.defaults)
        return tuple(self.cls.rule(bare, {**self.defaults, **self.group}))

    @property
    def adaptive(self) -> bool:
        """A per-coordinate step size: its rule holds a second-moment transform."""
        return any(
            type(t).__module__ in (adaptive.__name__, adopt.__name__, adafactor.__name__) for t in self.rule
        )

    @property
    def sgd_family(self) -> bool:
        """The notes' SGD family: gradient descent, with or without a momentum transform."""
        return all(type(t).__module__ == momentum.__name__ for t in self.rule)

    def make(self, params: Any, lr: float | None = None, **hyper: Any) -> Optimizer:
        """Build the optimizer: the entry's fixed settings, overridden by ``hyper``.
        ``params``: what the class takes (a model for a :attr:`model` entry)."""
        kw = {**self.fixed, **hyper}
        if lr is not None:
            kw["lr"] = lr
        if self.translate is not None:
            kw = self.translate(kw)
        return self.cls(params, **kw)


_ADAM_BETAS = ((0.9, 0.999), (0.5, 0.999), (0.9, 0.99), (0.95, 0.9999))

ENTRIES: tuple[Entry, ...] = (
    Entry("sgd", "SGD", optim.SGD, color="#1f77b4", note="plain (mini-batch) gradient descent"),
    Entry(
        "momentum",
        "Momentum",
        optim.SGD,
        {"momentum": 0.9},
        ("momentum", (0.5, 0.9, 0.99)),
        "#ff7f0e",
        "heavy ball, v ← μv − ηg",
    ),
    Entry(
        "nag",
        "Nesterov",
        optim.SGD,
        {"momentum": 0.9, "nesterov": True},
        ("momentum", (0.5, 0.9, 0.99)),
        "#2ca02c",
        "Nesterov momentum (cs231n/torch form)",
    ),
    Entry("adagrad", "AdaGrad", optim.Adagrad, color="#d62728", note="Σg² per coordinate"),
    Entry(
        "adadelta",
        "AdaDelta",
        optim.Adadelta,
        knob=("rho", (0.9, 0.95, 0.99)),
        color="#9467bd",
        note="ratio of running RMS",
    ),
    Entry(
        "rmsprop",
        "RMSProp",
        optim.RMSprop,
        knob=("alpha", (0.9, 0.99, 0.999)),
        color="#8c564b",
        note="EMA of g²",
    ),
    Entry(
        "adam", "Adam", optim.Adam, knob=("betas", _ADAM_BETAS), color="#e377c2", note="momentum + RMSProp"
    ),
    Entry(
        "nadam",
        "Nadam",
        optim.NAdam,
        knob=("betas", _ADAM_BETAS),
        color="#7f7f7f",
        note="Adam with Nesterov momentum",
    ),
    Entry(
        "adamw",
        "AdamW",
        optim.AdamW,
        knob=("weight_decay", (0.0, 1e-4, 1e-2)),
        color="#bcbd22",
        note="Adam, decoupled weight decay",
    ),
    Entry("amsgrad", "AMSGrad", optim.Adam, {"amsgrad": True}, ("betas", _ADAM_BETAS), "#17becf"),
    Entry("adamax", "Adamax", optim.Adamax, knob=("betas", _ADAM_BETAS), color="#393b79"),
    Entry("radam", "RAdam", optim.RAdam, knob=("betas", _ADAM_BETAS), color="#637939"),
    Entry(
        "lion",
        "Lion",
        optim.Lion,
        knob=("betas", ((0.9, 0.99), (0.95, 0.98), (0.9, 0.999))),
        color="#8c6d31",
        note="sign of interpolated momentum",
    ),
    Entry(
        "ema",
        "EMA momentum",
        optim.EMAMomentum,
        knob=("beta", (0.5, 0.9, 0.99)),
        color="#843c39",
        note="m = βm + (1−β)g from m₀ = 0",
    ),
    Entry(
        "sfadamw",
        "Schedule-Free AdamW",
        optim.AdamWScheduleFree,
        knob=("betas", ((0.9, 0.999), (0.95, 0.999), (0.98, 0.999), (0.9, 0.99))),
        color="#111111",
        note="iterate averaging in place of a schedule (Defazio et al. 2024)",
    ),
    Entry(
        "sfsgd",
        "Schedule-Free SGD",
        optim.SGDScheduleFree,
        knob=("momentum", (0.5, 0.9, 0.98)),
        color="#a6761d",
        note="Schedule-Free averaging over plain SGD",
    ),
    Entry(
        "adafactor",
        "Adafactor",
        optim.Adafactor,
        knob=("beta2_decay", (-0.8, -0.65, -0.5)),
        color="#e7298a",
        note="factored second moments: a row and a column EMA per matrix (Shazeer & Stern 2018)",
    ),
    Entry(
        "adopt",
        "ADOPT",
        optim.ADOPT,
        knob=("betas", ((0.9, 0.9999), (0.9, 0.999), (0.5, 0.9999), (0.95, 0.9999))),
        color="#1b9e77",
        note="Adam normalised by the previous second moment (Taniguchi et al. 2024)",
    ),
)


def _adamw_lr(kw: dict[str, Any]) -> dict[str, Any]:
    """MuonAdamW's AdamW learning rate as a ratio of Muon's: one lr, tuned as every other
    optimizer's is, moves both, and the ratio is the knob."""
    kw = dict(kw)
    ratio = kw.pop("adamw_ratio")
    kw["adamw_lr"] = kw.get("lr", muon.MUON_DEFAULTS["lr"]) * ratio
    return kw


#: Optimizers built over a whole model (:attr:`Entry.model`): the arena runs them; they
#: have no trajectory on a surface.
MODEL_ENTRIES: tuple[Entry, ...] = (
    Entry(
        "muon",
        "Muon + AdamW",
        optim.MuonAdamW,
        # the reference's lr = 0.02 for Muon and 3e-4 for AdamW: a ratio of 0.015
        {"lr": 0.02, "adamw_ratio": 0.015},
        ("adamw_ratio", (0.015, 0.05, 0.15)),
        "#00bfff",
        "Muon (orthogonalised momentum) on the hidden matrices, AdamW on embeddings, head, "
        "biases and norms: the recipe of the Muon authors",
        model=True,
        group={**muon.MUON_DEFAULTS, "use_muon": True},
        translate=_adamw_lr,
    ),
)

BY_KEY: dict[str, Entry] = {e.key: e for e in (*ENTRIES, *MODEL_ENTRIES)}

#: The notes' own set, in the order the notes introduce them.
NOTES = ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam", "nadam")

#: What practitioners pick now, beyond the notes: the arena's and the gallery's defaults add them.
CURRENT = ("sfadamw", "adopt", "adafactor")

#: The arena's default set: the notes', AdamW, the current ones, and Muon's recipe.
ARENA = (*NOTES, "adamw", *CURRENT, "muon")


def set_mode(opt: Optimizer, training: bool) -> None:
    """Put an optimizer that evaluates elsewhere than it trains (Schedule-Free's
    ``train()`` / ``eval()``: gradients at y, the model to evaluate at x) in training or
    evaluation mode; an optimizer without such methods has one point and is left alone."""
    switch = getattr(opt, "train" if training else "eval", None)
    if callable(switch):
        switch()


def get(key: str) -> Entry:
    try:
        return BY_KEY[key.strip().lower()]
    except KeyError:
        raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(BY_KEY)}") from None


def select(
    keys: str | Iterable[str] | None, default: Sequence[str] = NOTES, points: bool = False
) -> list[Entry]:
    """Entries for a comma-separated string or a list of keys (``None``: ``default``).
    ``points``: for stepping a lone point (landscapes, playground), which refuses a
    :attr:`Entry.model` entry by name."""
    if keys is None:
        keys = default
    if isinstance(keys, str):
        keys = [k for k in keys.split(",") if k.strip()]
    entries = [get(k) for k in keys]
    if not entries:
        raise ValueError("no optimizer selected")
    if points:
        for e in entries:
            refuse_model(e)
    return entries


def refuse_model(entry: Entry) -> None:
    """``ValueError`` for an entry that steps a whole model, not a lone point."""
    if entry.model:
        raise ValueError(
            f"{entry.key!r} ({entry.label}) splits a model's params between two rules, so it has no "
            "trajectory of a single point on a surface; the arena runs it (descent arena --optimizers "
            f"{entry.key})"
        )
