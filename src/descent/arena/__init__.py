"""The arena: a fair, tuned, seeded comparison of optimizers on small real tasks, ending
in an HTML report and a recommendation derived from the measurements.

>>> import descent.arena as arena
>>> results = arena.run(quick=True, out="arena-out")          # doctest: +SKIP
>>> results["recommendation"]["text"][0]                     # doctest: +SKIP

Your own task: build a :class:`Task` (model factory, data, loss, metric, target) and pass
it, or its import path ``"package.module:factory"``, in ``tasks``.
"""

from __future__ import annotations

from .data import REGIME_LABELS, REGIMES
from .results import SCHEMA, SCHEMA_ID
from .session import run
from .tasks import Task, TaskError, accuracy, binary_accuracy, builtin_names, r2, resolve

__all__ = [
    "REGIMES",
    "REGIME_LABELS",
    "SCHEMA",
    "SCHEMA_ID",
    "Task",
    "TaskError",
    "accuracy",
    "binary_accuracy",
    "builtin_names",
    "r2",
    "resolve",
    "run",
]
