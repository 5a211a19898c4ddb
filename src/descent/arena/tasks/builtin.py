"""The built-in tasks: small, real or generated, each a different kind of problem.

Budgets (steps per regime) are sized so one run takes a fraction of a second on one CPU
core; the targets are validation-metric values a tuned optimizer reaches within them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch.nn.functional as F
from torch import Tensor, nn

from . import data
from .task import Task, accuracy, binary_accuracy, r2


def bce(output: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(output.reshape(-1), target.reshape(-1))


def mse(output: Tensor, target: Tensor) -> Tensor:
    return F.mse_loss(output, target.reshape(output.shape))


def _majority(val_targets: Tensor) -> float:
    counts = val_targets.long().reshape(-1).bincount()
    return (counts.max() / counts.sum()).item()


# -- data, cached per process (the workers build each set once) -----------------------------
digits_flat = cache(data.digits)
breast_cancer = cache(data.breast_cancer)
sparse = cache(data.sparse_features)
friedman = cache(data.noisy_regression)


@cache
def digits_images():
    return data.digits(images=True)


@cache
def _chars():
    return data.char_windows(data.generated_text())


def chars() -> tuple:
    train, val, _ = _chars()
    return train, val


# -- models -----------------------------------------------------------------------------------
def digits_mlp_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def cancer_model() -> nn.Module:
    return nn.Linear(30, 1)


def sparse_model() -> nn.Module:
    train, _ = sparse()
    return nn.Linear(train.tensors[0].shape[1], 1)


def friedman_model() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))


def digits_cnn_model() -> nn.Module:
    # Strided convolutions instead of pooling: the same receptive field at half the
    # cost on CPU, which matters for full-batch GD over 1437 images.
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def chars_model(context: int = 8, embed: int = 12, hidden: int = 64) -> nn.Module:
    vocab = len(_chars()[2])
    return nn.Sequential(
        nn.Embedding(vocab, embed),
        nn.Flatten(),
        nn.Linear(context * embed, hidden),
        nn.Tanh(),
        nn.Linear(hidden, vocab),
    )


# -- the tasks -------------------------------------------------------------------------------
def digits_mlp() -> Task:
    return Task(
        name="digits_mlp",
        title="Digits MLP",
        description="scikit-learn's 8×8 digits, 64–64–10 ReLU MLP, cross-entropy",
        model=digits_mlp_model,
        data=digits_flat,
        loss=F.cross_entropy,
        metric=accuracy,
        target=0.9,
        chance=_majority(digits_flat()[1].tensors[1]),
        batch_size=32,
        steps={"full": 100, "minibatch": 200, "sgd": 250},
        tags=("classification", "image", "mlp"),
    )


def cancer_logreg() -> Task:
    return Task(
        name="cancer_logreg",
        title="Breast-cancer logistic regression",
        description="scikit-learn's Wisconsin breast cancer (30 standardized features), logistic regression",
        model=cancer_model,
        data=breast_cancer,
        loss=bce,
        metric=binary_accuracy,
        target=0.95,
        chance=_majority(breast_cancer()[1].tensors[1]),
        batch_size=16,
        steps={"full": 100, "minibatch": 150, "sgd": 250},
        tags=("classification", "tabular", "convex"),
    )


def sparse_logreg() -> Task:
    return Task(
        name="sparse_logreg",
        title="Sparse rare-feature classification",
        description="generated: 400 rare binary features (2% on) carry the signal, 10 dense "
        "Gaussian ones do not; logistic regression. No SGD (batch of 1) regime: it would need "
        "thousands of steps before each rare feature is seen a few times.",
        model=sparse_model,
        data=sparse,
        loss=bce,
        metric=binary_accuracy,
        target=0.75,
        chance=_majority(sparse()[1].tensors[1]),
        batch_size=32,
        steps={"full": 100, "minibatch": 200},
        # SGD (batch of 1) would need epochs, thousands of steps, before each rare
        # feature is seen a few times: not affordable in this budget.
        regimes=("full", "minibatch"),
        tags=("classification", "sparse", "convex"),
    )


def friedman_mlp() -> Task:
    return Task(
        name="friedman_mlp",
        title="Noisy regression (Friedman #1)",
        description="generated Friedman #1, 10 features (5 irrelevant), noise σ=3; 10–32–1 tanh MLP, MSE",
        model=friedman_model,
        data=friedman,
        loss=mse,
        metric=r2,
        metric_name="R²",
        target=0.5,
        chance=0.0,
        batch_size=32,
        steps={"full": 150, "minibatch": 200, "sgd": 250},
        tags=("regression", "noisy", "mlp"),
    )


def digits_cnn() -> Task:
    return Task(
        name="digits_cnn",
        title="Digits CNN",
        description="scikit-learn's 8×8 digits as images; two strided 3×3 conv layers (8, 16) + linear",
        model=digits_cnn_model,
        data=digits_images,
        loss=F.cross_entropy,
        metric=accuracy,
        target=0.9,
        chance=_majority(digits_images()[1].tensors[1]),
        batch_size=32,
        steps={"full": 25, "minibatch": 150, "sgd": 250},
        tags=("classification", "image", "cnn"),
    )


def chars_mlp() -> Task:
    return Task(
        name="chars_mlp",
        title="Character model",
        description="next character from the previous 8, on generated English-like text; "
        "embedding 12 + 64 tanh MLP (Bengio-style). No SGD (batch of 1) regime: a few hundred "
        "characters are too little text to learn from.",
        model=chars_model,
        data=chars,
        loss=F.cross_entropy,
        metric=accuracy,
        target=0.45,
        chance=_majority(chars()[1].tensors[1]),
        batch_size=64,
        steps={"full": 30, "minibatch": 200},
        # SGD (batch of 1): a few hundred characters is too little text to learn from.
        regimes=("full", "minibatch"),
        tags=("classification", "sequence", "embedding"),
    )


BUILTIN: dict[str, Callable[[], Task]] = {
    f.__name__: f for f in (digits_mlp, cancer_logreg, sparse_logreg, friedman_mlp, digits_cnn, chars_mlp)
}
