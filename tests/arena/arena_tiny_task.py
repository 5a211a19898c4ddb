"""A tiny user task for the tests: three Gaussian blobs in 2-D, a linear classifier.

It is imported by path (``arena_tiny_task:make``), as a user's own task would be, so the
worker processes rebuild it the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from descent.arena import Task, accuracy


def blobs(n: int = 240, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    y = torch.arange(n) % 3
    x = centers[y] + 0.8 * torch.randn(n, 2, generator=g)
    cut = n * 3 // 4
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def model() -> nn.Module:
    return nn.Linear(2, 3)


def make() -> Task:
    return Task(
        name="blobs",
        title="Three blobs",
        description="three Gaussian blobs, linear classifier",
        model=model,
        data=blobs,
        loss=F.cross_entropy,
        metric=accuracy,
        target=0.8,
        chance=1 / 3,
        batch_size=16,
        steps={"full": 12, "minibatch": 16, "sgd": 16},
        tags=("classification",),
    )


def not_a_task() -> int:
    return 3


def broken() -> Task:
    """A task whose model cannot take its data (the shapes do not match)."""
    task = make()
    task.model = lambda: nn.Linear(5, 3)
    task.name = "broken"
    return task


_calls = {"n": 0}


def _exploding_loss(out, y):
    _calls["n"] += 1
    if _calls["n"] > 5:
        raise RuntimeError("the loss exploded on purpose")
    return F.cross_entropy(out, y)


def explodes() -> Task:
    """A task that passes the up-front check and then fails in training."""
    task = make()
    task.loss = _exploding_loss
    task.name = "explodes"
    return task
