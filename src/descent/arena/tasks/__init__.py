"""The arena's first stage: the problems. A :class:`Task` (``task``), the six built-in
ones (``builtin``, on the data sets of ``data``) and how a task is named (``registry``)."""

from .data import REGIME_LABELS, REGIMES
from .registry import builtin_names, resolve
from .task import Task, TaskError, accuracy, binary_accuracy, check, r2

__all__ = [
    "REGIMES",
    "REGIME_LABELS",
    "Task",
    "TaskError",
    "accuracy",
    "binary_accuracy",
    "builtin_names",
    "check",
    "r2",
    "resolve",
]
