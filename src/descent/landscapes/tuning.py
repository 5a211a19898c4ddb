"""Fair learning rates: each optimizer tuned per surface on one log grid, by one rule.

The rule, in full:

1. Candidates: every learning rate of :data:`LR_GRID` (10^-5 … 100, four per decade,
   29 values) crossed with every value of the optimizer's catalog knob
   (``Entry.knob``: momentum for momentum/Nesterov, ρ for AdaDelta, α for RMSProp,
   the betas for Adam-type methods; none for SGD and AdaGrad).
2. Each candidate runs ``steps`` steps from the surface's start (all candidates of an
   optimizer run together, see :func:`~descent.landscapes.trajectories.run_batch`),
   with the surface's noise if it has any (the same noise for every candidate).
3. A candidate that produced NaN/inf or left the surface's box at any step is out.
4. The score of the rest is the surface's gap
   (:meth:`~descent.landscapes.surfaces.Surface.gap`: distance to the nearest
   minimum, 0 within ``tol``; for the saddles, how far f is still above the escape
   level), at its worst over the last 10 % of the steps: where the run has settled,
   not where a bouncing run happens to pass at the last step.
5. Lowest score wins; ties go to the smaller learning rate (then to the knob value
   listed first). So when several settings reach the goal, the gentlest one that gets
   there within the budget is drawn.

``tune=False`` (defaults mode) skips all this and uses the catalog's settings with the
optimizer's default learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..catalog import Entry
from .surfaces import Surface
from .trajectories import Path, run_batch

#: 10^-5 … 10^2, four points per decade (AdaDelta's steps start near lr·√ε, so it needs
#: learning rates well above its default 1.0).
LR_GRID: tuple[float, ...] = tuple(10 ** (k / 4) for k in range(-20, 9))


class TuningError(RuntimeError):
    """No candidate of an optimizer survived (every one diverged)."""


@dataclass(frozen=True)
class Tuned:
    """The setting drawn for one optimizer on one surface, and its path."""

    key: str
    lr: float
    #: the knob's value (and nothing else), e.g. {"momentum": 0.9}; empty without a knob
    hyper: dict[str, Any] = field(default_factory=dict)
    #: the run's score: its worst gap over the last 10 % of the steps
    score: float = math.nan
    tuned: bool = True
    candidates: int = 0
    diverged: int = 0
    path: Path | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """``{"lr": …, <knob>: …}``, the shape the gallery reports."""
        return {"lr": self.lr, **self.hyper}


def candidates(entry: Entry, lrs: tuple[float, ...] = LR_GRID) -> list[tuple[float, dict[str, Any]]]:
    """(lr, hyper) pairs: for each knob value, every lr (rows of one group, in order)."""
    if entry.knob is None:
        return [(lr, {}) for lr in lrs]
    name, values = entry.knob
    return [(lr, {name: v}) for v in values for lr in lrs]


def knob_value(entry: Entry, hyper: dict[str, Any] | None = None) -> dict[str, Any]:
    """The knob's effective value for ``hyper`` (catalog setting or class default)."""
    if entry.knob is None:
        return {}
    name = entry.knob[0]
    if hyper and name in hyper:
        return {name: hyper[name]}
    return {name: entry.default(name)}


def defaults(surface: Surface, entry: Entry, steps: int) -> Tuned:
    """Defaults mode: the catalog's settings and the class's default lr, untuned."""
    result = run_batch(surface, entry, [(entry.default_lr, {})], steps, keep_history=True)
    path = result.path(0, surface)
    return Tuned(entry.key, entry.default_lr, knob_value(entry), float(result.score[0]), False, 1, 0, path)


def tune(surface: Surface, entry: Entry, steps: int, lrs: tuple[float, ...] = LR_GRID) -> Tuned:
    """The best (lr, knob) of ``entry`` on ``surface`` by the rule in this module's doc,
    with the winner's path (its row of the batch: the very run that was scored)."""
    cands = candidates(entry, lrs)
    result = run_batch(surface, entry, cands, steps, keep_history=True)
    gaps = result.score.tolist()
    alive = [i for i in range(len(cands)) if not result.diverged[i]]
    if not alive:
        raise TuningError(
            f"every candidate of {entry.key} diverged on {surface.key} (lr from {min(lrs):g} to {max(lrs):g})"
        )
    # Ties to the smaller lr, then to the knob value listed first (the lower index).
    best = min(alive, key=lambda i: (gaps[i], cands[i][0], i))
    lr, hyper = cands[best]
    n = len(cands)
    return Tuned(entry.key, lr, dict(hyper), gaps[best], True, n, n - len(alive), result.path(best, surface))


def tune_all(
    surface: Surface, entries: list[Entry], steps: int, tune_lr: bool = True, progress: Any = None
) -> dict[str, Tuned]:
    """Tuned (or default) settings and paths for every entry; ``progress(key)`` after each."""
    out: dict[str, Tuned] = {}
    for entry in entries:
        out[entry.key] = tune(surface, entry, steps) if tune_lr else defaults(surface, entry, steps)
        if progress is not None:
            progress(entry.key)
    return out
