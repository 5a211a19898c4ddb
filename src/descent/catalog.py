"""The optimizers the notes compare, by short name: how to build each, its colour in
every picture, and which hyperparameter besides the learning rate is worth tuning.

Landscapes, the arena and the CLI all read this table, so ``momentum`` means the same
optimizer, and is drawn in the same colour, everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer

from . import optim


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

    @property
    def default_lr(self) -> float:
        return float(self.cls.__init__.__defaults__[0])  # type: ignore[index]

    def make(self, params: Any, lr: float | None = None, **hyper: Any) -> Optimizer:
        """Build the optimizer: the entry's fixed settings, overridden by ``hyper``."""
        kw = {**self.fixed, **hyper}
        if lr is not None:
            kw["lr"] = lr
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
)

BY_KEY: dict[str, Entry] = {e.key: e for e in ENTRIES}

#: The notes' own set, in the order the notes introduce them.
NOTES = ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam", "nadam")


def get(key: str) -> Entry:
    try:
        return BY_KEY[key.strip().lower()]
    except KeyError:
        raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(BY_KEY)}") from None


def select(keys: str | Iterable[str] | None, default: Sequence[str] = NOTES) -> list[Entry]:
    """Entries for a comma-separated string or a list of keys (``None``: ``default``)."""
    if keys is None:
        keys = default
    if isinstance(keys, str):
        keys = [k for k in keys.split(",") if k.strip()]
    entries = [get(k) for k in keys]
    if not entries:
        raise ValueError("no optimizer selected")
    return entries
