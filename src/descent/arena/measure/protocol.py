"""The protocol, for one optimizer on one task in one data regime (a *study*):

1. **defaults**: the optimizer as torch builds it (its default lr and settings), seeds
   ``1..K``;
2. **lr**: a log grid of learning rates, seed 0, the knob at its default;
3. **knob**: the optimizer's key hyperparameter (catalog ``knob``), its other candidate
   values at the best lr of step 2;
4. **tuned**: the best setting of steps 2–3, by final validation loss, rerun with seeds
   ``1..K`` (fresh seeds: the tuning seed's luck is not reported as skill).

Steps 2 and 3 together are the *tuning budget*: the same number of trials for every
optimizer (see :func:`trials`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ... import catalog
from ..records import Run
from .train import RunSpec

#: The lr grid spans the decades [LR_LO, LR_HI], widened to whole decades reaching a
#: tenth and ten times the optimizer's default lr (AdaDelta's default is 1.0).
LR_LO, LR_HI = 1e-4, 1.0
#: Fewest lr points before any trial goes to the knob.
MIN_LR_POINTS = 4

SELECTION_RULE = (
    "lowest final validation loss of the tuning seed (0); a diverged run counts as +inf; "
    "ties go to the earlier trial"
)


def lr_range(entry: catalog.Entry) -> tuple[float, float]:
    lo = 10.0 ** math.floor(math.log10(entry.default_lr / 10) + 1e-9)
    hi = 10.0 ** math.ceil(math.log10(entry.default_lr * 10) - 1e-9)
    return min(LR_LO, lo), max(LR_HI, hi)


def default_hyper(entry: catalog.Entry) -> dict[str, Any]:
    """The value of the entry's knob when not tuned (its fixed setting, else the class
    default)."""
    if entry.knob is None:
        return {}
    return {entry.knob[0]: entry.default(entry.knob[0])}


def trials(entry: catalog.Entry, budget: int) -> tuple[list[float], list[Any]]:
    """The lr grid and the knob values to try for a budget of ``budget`` trials.

    Every optimizer gets exactly ``budget`` trials. Up to a third of them go to the
    knob's other candidate values (catalog order), but never so many that fewer than
    ``min(budget, 4)`` remain for the lr; the rest are learning rates, log-spaced over
    :func:`lr_range`. A budget of 1 is the default lr alone.
    """
    if budget < 1:
        raise ValueError(f"Invalid tuning budget {budget}: need at least 1 trial")
    alternatives: list[Any] = []
    if entry.knob is not None:
        current = _norm(default_hyper(entry)[entry.knob[0]])
        alternatives = [v for v in entry.knob[1] if _norm(v) != current]
    n_knob = min(len(alternatives), budget // 3)
    n_lr = max(min(budget, MIN_LR_POINTS), budget - n_knob)
    if n_lr == 1:
        grid = [entry.default_lr]
    else:
        lo, hi = lr_range(entry)
        grid = [float(f"{x:.3g}") for x in np.geomspace(lo, hi, n_lr)]
    return grid, alternatives[: budget - n_lr]


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, list | tuple) else v


@dataclass
class Study:
    """One (task, regime, optimizer): its runs, in the protocol's order."""

    task: Any  # a task ref (str) or a picklable Task
    task_name: str
    regime: str
    entry: catalog.Entry
    budget: int
    seeds: int
    steps: int
    results: dict[str, Run] = field(default_factory=dict)
    best: Run | None = None

    def __post_init__(self) -> None:
        self.lr_grid, self.knob_values = trials(self.entry, self.budget)
        self._waiting: set[str] = set()

    @property
    def total(self) -> int:
        return 2 * self.seeds + self.budget

    def _spec(self, phase: str, n: int, **kw: Any) -> RunSpec:
        rid = f"{self.task_name}/{self.regime}/{self.entry.key}/{phase}{n}"
        spec = RunSpec(self.task, self.regime, self.entry.key, phase=phase, id=rid, steps=self.steps)
        return replace(spec, **kw)

    def start(self) -> list[RunSpec]:
        jobs = [self._spec("defaults", s, seed=s + 1) for s in range(self.seeds)]
        jobs += [self._spec("lr", i, lr=lr, seed=0) for i, lr in enumerate(self.lr_grid)]
        self._waiting = {j.id for j in jobs if j.phase == "lr"}
        return jobs

    def done(self, result: Run) -> list[RunSpec]:
        """Record a finished run; return the runs it unlocks."""
        self.results[result.id] = result
        self._waiting.discard(result.id)
        if self._waiting or result.phase not in ("lr", "knob"):
            return []
        if result.phase == "lr" and self.knob_values:
            lr = self._pick(("lr",)).lr
            key = self.entry.knob[0]  # type: ignore[index]
            jobs = [
                self._spec("knob", i, lr=lr, hyper={key: v}, seed=0) for i, v in enumerate(self.knob_values)
            ]
            self._waiting = {j.id for j in jobs}
            return jobs
        self.best = self._pick(("lr", "knob"))
        hyper = {k: _norm(v) for k, v in self.best.hyper.items()}
        return [self._spec("tuned", s, lr=self.best.lr, hyper=hyper, seed=s + 1) for s in range(self.seeds)]

    def _pick(self, phases: tuple[str, ...]) -> Run:
        tried = [r for r in self.ordered() if r.phase in phases]
        return min(tried, key=lambda r: r.score)  # min keeps the first of equal scores

    def ordered(self) -> list[Run]:
        """This study's results in protocol order (deterministic, whatever ran first)."""
        order = {"defaults": 0, "lr": 1, "knob": 2, "tuned": 3}

        def key(r: Run) -> tuple[int, int]:
            return order[r.phase], int(r.id.rsplit("/", 1)[1][len(r.phase) :])

        return sorted(self.results.values(), key=key)

    def phase(self, name: str) -> list[Run]:
        return [r for r in self.ordered() if r.phase == name]


def plan(
    tasks: list[tuple[Any, str, tuple[str, ...], dict[str, int]]],
    entries: list[catalog.Entry],
    budget: int,
    seeds: int,
) -> list[Study]:
    """Every study: tasks × their regimes × optimizers. ``tasks`` holds, per task, its
    ref, name, regimes and steps per regime."""
    if seeds < 1:
        raise ValueError(f"Invalid number of seeds {seeds}: need at least 1")
    return [
        Study(ref, name, regime, entry, budget, seeds, steps[regime])
        for ref, name, regimes, steps in tasks
        for regime in regimes
        for entry in entries
    ]
