"""The Task protocol: what the arena needs to train and judge a model.

A task is a :class:`Task`: a model factory, a data factory returning ``(train, val)``
datasets of ``(x, y)`` pairs, a loss, a metric with a target, and how many steps each
data regime gets. Factories are called inside the worker processes, so a task passed
by import path (``"mypkg.tasks:make_task"``) works everywhere; a ``Task`` object works
when it pickles (module-level functions, not lambdas), and otherwise runs in-process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data import REGIMES

Metric = Callable[[Tensor, Tensor], float]


def accuracy(output: Tensor, target: Tensor) -> float:
    """Fraction of rows whose arg-max is the target class (multi-class logits)."""
    return (output.argmax(-1) == target).float().mean().item()


def binary_accuracy(output: Tensor, target: Tensor) -> float:
    """Fraction of logits on the target's side of zero (one logit per example)."""
    return ((output.reshape(-1) > 0).float() == target.reshape(-1)).float().mean().item()


def r2(output: Tensor, target: Tensor) -> float:
    """Coefficient of determination: 1 − SSE/SST (0 for predicting the mean)."""
    target = target.reshape(output.shape)
    sst = ((target - target.mean()) ** 2).sum().item()
    return 1.0 - ((output - target) ** 2).sum().item() / max(sst, 1e-12)


@dataclass
class Task:
    """One problem for the arena.

    ``model``
        builds a fresh ``nn.Module``; called after ``torch.manual_seed(seed)``, so its
        initialisation is the run's seed.
    ``data``
        returns ``(train, val)``: ``torch.utils.data.Dataset``\\ s of ``(x, y)``. A
        ``TensorDataset`` is batched by indexing (fast); any other dataset goes through
        ``DataLoader``'s default collation.
    ``loss``
        ``loss(output, y)``, the batch mean: what the optimizers minimise and what
        tuning selects on (final validation loss).
    ``metric``, ``metric_name``, ``higher_is_better``, ``target``
        the judged quality on the validation set and the value that counts as reached
        (for steps and wall time to target).
    ``chance``
        the metric of a trivial predictor (majority class, the mean), for reference.
    ``batch_size``
        the mini-batch regime's batch size.
    ``steps``
        training steps per regime (an ``int`` for all); the mini-batch and SGD regimes
        see ``steps × batch`` examples, full-batch GD ``steps`` epochs.
    ``regimes``
        the regimes this task runs in (a subset of ``full``, ``minibatch``, ``sgd``).
    """

    name: str
    model: Callable[[], nn.Module]
    data: Callable[[], tuple[Dataset, Dataset]]
    loss: Callable[[Tensor, Tensor], Tensor]
    metric: Metric = accuracy
    target: float | None = None
    metric_name: str = "accuracy"
    higher_is_better: bool = True
    chance: float | None = None
    batch_size: int = 32
    steps: int | Mapping[str, int] = field(
        default_factory=lambda: {"full": 200, "minibatch": 300, "sgd": 400}
    )
    regimes: tuple[str, ...] = REGIMES
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    #: how a worker process rebuilds this task (set by :func:`resolve`)
    ref: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name or ""):
            raise ValueError(f"Invalid task name {self.name!r}: use letters, digits, '_', '-', '.'")
        bad = [r for r in self.regimes if r not in REGIMES]
        if bad or not self.regimes:
            raise ValueError(f"Task {self.name!r}: invalid regimes {bad or '()'}; choose from {REGIMES}")
        for regime in self.regimes:
            if self.steps_for(regime) < 1:
                raise ValueError(f"Task {self.name!r}: steps for {regime!r} must be ≥ 1")
        if self.batch_size < 1:
            raise ValueError(f"Task {self.name!r}: invalid batch_size {self.batch_size}")
        self.title = self.title or self.name

    def steps_for(self, regime: str) -> int:
        if isinstance(self.steps, Mapping):
            return int(self.steps[regime])
        return int(self.steps)

    def reached(self, value: float | None) -> bool:
        """Whether a validation metric value meets the target."""
        if self.target is None or value is None or not math.isfinite(value):
            return False
        return value >= self.target if self.higher_is_better else value <= self.target


class TaskError(ValueError):
    """A task that cannot be found, imported or run; the message says which and why."""


def check(task: Task) -> dict[str, Any]:
    """Build the task's data and model once and run one batch through the loss and the
    metric, so a broken task fails before any run starts. Returns facts for the report."""
    try:
        train, val = task.data()
        n_train, n_val = len(train), len(val)  # type: ignore[arg-type]
        if n_train < 1 or n_val < 1:
            raise ValueError(f"empty split (train {n_train}, val {n_val})")
        torch.manual_seed(0)
        model = task.model()
        x, y = _first(train, min(n_train, 4))
        with torch.no_grad():
            loss = task.loss(model(x), y)
            task.metric(model(x), y)
        if loss.ndim != 0:
            raise ValueError(f"loss must be a scalar (a batch mean), got shape {tuple(loss.shape)}")
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if n_params == 0:
            raise ValueError("the model has no trainable parameters")
    except TaskError:
        raise
    except Exception as exc:
        raise TaskError(f"Task {task.name!r} does not run: {type(exc).__name__}: {exc}") from exc
    return {"n_train": n_train, "n_val": n_val, "n_params": n_params}


def _first(dataset: Dataset, n: int) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader

    return next(iter(DataLoader(dataset, batch_size=n)))
