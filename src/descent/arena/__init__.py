"""The arena: a fair, tuned, seeded comparison of optimizers on small real tasks, ending
in an HTML report and a recommendation derived from the measurements.

>>> import descent.arena as arena
>>> results = arena.run(quick=True, out="arena-out")          # doctest: +SKIP
>>> results.recommendation.text[0]                           # doctest: +SKIP
>>> arena.redraw("arena-out/results.json")                   # doctest: +SKIP

The package is laid out by stage: ``tasks`` (the problems), ``measure`` (training runs
and the tuning protocol), ``records`` (the typed results) and ``analysis`` (statistics,
ranks, the recommendation), ``present`` (figures, ``index.html``, the terminal summary);
``session`` runs them in that order.

Your own task: build a :class:`Task` (model factory, data, loss, metric, target) and pass
it, or its import path ``"package.module:factory"``, in ``tasks``.
"""

from __future__ import annotations

from .records import SCHEMA, SCHEMA_ID, Results
from .session import redraw, run
from .tasks import (
    REGIME_LABELS,
    REGIMES,
    Task,
    TaskError,
    accuracy,
    binary_accuracy,
    builtin_names,
    r2,
    resolve,
)

__all__ = [
    "REGIMES",
    "REGIME_LABELS",
    "SCHEMA",
    "SCHEMA_ID",
    "Results",
    "Task",
    "TaskError",
    "accuracy",
    "binary_accuracy",
    "builtin_names",
    "r2",
    "redraw",
    "resolve",
    "run",
]
