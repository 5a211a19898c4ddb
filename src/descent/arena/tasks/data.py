"""The arena's data: bundled scikit-learn sets, seeded generators, and the loaders that
turn a training set into the notes' three data regimes.

Nothing here downloads: digits and breast cancer ship inside scikit-learn, the sparse and
regression sets and the text are generated from a fixed seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

#: The notes' three regimes: GD on the whole training set, mini-batch GD, and SGD.
REGIMES = ("full", "minibatch", "sgd")
REGIME_LABELS = {"full": "GD (full batch)", "minibatch": "mini-batch GD", "sgd": "SGD (batch of 1)"}

#: Every train/validation split and generated data set uses this seed, so all runs of
#: all optimizers see the same data; only the run's own seed varies init and batch order.
DATA_SEED = 20240715


def batch_size_for(regime: str, n_train: int, minibatch: int) -> int:
    """The batch size a regime uses: all of the data, the task's mini-batch, or one."""
    if regime == "full":
        return n_train
    if regime == "minibatch":
        return min(minibatch, n_train)
    if regime == "sgd":
        return 1
    raise ValueError(f"Unknown regime {regime!r}; choose from: {', '.join(REGIMES)}")


class ShufflePartition(Sampler):
    """The notes' mini-batch recipe as a batch sampler: each epoch, shuffle the training
    set (a seeded permutation), then partition it into consecutive batches (the last one
    may be smaller). Yields index tensors, so a ``TensorDataset`` is batched by one
    indexing op; with ``shuffle=False`` and one batch it yields the whole set as a slice
    (full-batch GD: no copy, every step sees every example)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True):
        self.n, self.batch_size, self.generator, self.shuffle = n, batch_size, generator, shuffle

    def __iter__(self) -> Iterator[Tensor | slice]:
        if not self.shuffle and self.batch_size >= self.n:
            return iter([slice(0, self.n)])
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return iter(order.split(self.batch_size))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def make_loader(train: Dataset, regime: str, batch_size: int, seed: int) -> DataLoader:
    """A torch ``DataLoader`` for one regime: each epoch shuffles, then partitions.

    A ``TensorDataset`` is indexed with a whole batch at once (the sampler yields index
    tensors and ``batch_size=None`` turns off per-example collation): the batches of
    ``DataLoader(train, batch_size, shuffle=True)`` without one Python call per example.
    Full-batch GD needs no shuffle: every step sees every example.
    """
    generator = torch.Generator().manual_seed(seed)
    shuffle = regime != "full"
    if isinstance(train, TensorDataset):
        sampler = ShufflePartition(len(train), batch_size, generator, shuffle)
        return DataLoader(train, sampler=sampler, batch_size=None)
    return DataLoader(train, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _split(n: int, val_fraction: float, stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=DATA_SEED, stratify=stratify)
    return np.sort(tr), np.sort(va)


def _standardize(x: np.ndarray, tr: np.ndarray) -> np.ndarray:
    mean, std = x[tr].mean(0), x[tr].std(0)
    return (x - mean) / np.where(std > 0, std, 1.0)


def _pair(x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray, y_dtype: torch.dtype):
    tx = torch.as_tensor(x, dtype=torch.float32)
    ty = torch.as_tensor(y).to(y_dtype)
    return TensorDataset(tx[tr], ty[tr]), TensorDataset(tx[va], ty[va])


def digits(images: bool = False) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes), in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data / 16.0
    if images:
        x = x.reshape(-1, 1, 8, 8)
    tr, va = _split(len(x), 0.2, d.target)
    return _pair(x, d.target, tr, va, torch.long)


def breast_cancer() -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's bundled Wisconsin breast-cancer set (569 × 30), standardized."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    tr, va = _split(len(d.data), 0.2, d.target)
    return _pair(_standardize(d.data, tr), d.target, tr, va, torch.float32)


def sparse_features(
    n: int = 3000, rare: int = 400, dense: int = 10, p_rare: float = 0.02
) -> tuple[TensorDataset, TensorDataset]:
    """Binary classification where only rare features carry signal.

    ``rare`` binary features are each on in a fraction ``p_rare`` of examples and have
    large weights; ``dense`` Gaussian features of scale 3 are on in every example and
    carry none. The dense features set the largest stable step of a global learning
    rate, at which the rare features' weights barely move: the case where the notes
    say a per-coordinate (adaptive) learning rate pays.
    """
    rng = np.random.default_rng(DATA_SEED)
    x_rare = (rng.random((n, rare)) < p_rare).astype(np.float64)
    x_dense = 3.0 * rng.standard_normal((n, dense))
    w = rng.normal(0.0, 2.5, rare)
    logit = x_rare @ w - (x_rare.sum(1) * w.mean())
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    x = np.concatenate([x_dense, x_rare], axis=1)
    tr, va = _split(n, 0.2, y.astype(int))
    return _pair(x, y, tr, va, torch.float32)


def noisy_regression(n: int = 1200, noise: float = 3.0) -> tuple[TensorDataset, TensorDataset]:
    """Friedman #1 (scikit-learn's generator): 10 features, 5 of them irrelevant, with
    noise of standard deviation 3 (about a quarter of the target's variance is noise).
    Inputs and target are standardized on the training split."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n, n_features=10, noise=noise, random_state=DATA_SEED)
    tr, va = _split(n, 0.2)
    y = (y - y[tr].mean()) / y[tr].std()
    return _pair(_standardize(x, tr), y.reshape(-1, 1), tr, va, torch.float32)


# -- text ------------------------------------------------------------------------------------
_WORDS = {
    "det": ("the", "a", "every", "one", "no"),
    "adj": ("quick", "lazy", "small", "old", "bright", "quiet", "green", "tired", "happy", "cold"),
    "noun": ("fox", "dog", "cat", "bird", "river", "tree", "child", "ship", "storm", "garden", "king"),
    "verb": ("sees", "finds", "follows", "watches", "leaves", "remembers", "carries", "hears"),
    "iverb": ("sleeps", "runs", "sings", "waits", "falls", "returns", "laughs"),
    "adv": ("slowly", "again", "today", "quietly", "at night", "in the rain", "by the sea"),
}


def _phrase(rng: random.Random) -> str:
    words = [rng.choice(_WORDS["det"])]
    if rng.random() < 0.6:
        words.append(rng.choice(_WORDS["adj"]))
    words.append(rng.choice(_WORDS["noun"]))
    return " ".join(words)


def _sentence(rng: random.Random) -> str:
    if rng.random() < 0.55:
        body = f"{_phrase(rng)} {rng.choice(_WORDS['verb'])} {_phrase(rng)}"
    else:
        body = f"{_phrase(rng)} {rng.choice(_WORDS['iverb'])}"
    if rng.random() < 0.5:
        body += " " + rng.choice(_WORDS["adv"])
    if rng.random() < 0.25:
        body += f" and {_phrase(rng)} {rng.choice(_WORDS['iverb'])}"
    return body + "."


def generated_text(chars: int = 5000, seed: int = DATA_SEED) -> str:
    """English-like text from a small seeded grammar (so nothing needs to ship or
    download): determiners, adjectives, nouns, verbs and adverbs in simple sentences."""
    rng = random.Random(seed)
    out: list[str] = []
    total = 0
    while total < chars:
        s = _sentence(rng)
        out.append(s)
        total += len(s) + 1
    return " ".join(out)[:chars]


def char_windows(
    text: str, context: int = 8, val_fraction: float = 0.15
) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """Next-character prediction: each example is ``context`` characters (as indices)
    and the character after them. The split is by position (the last part of the text is
    validation), so overlapping windows never straddle train and validation."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    codes = torch.tensor([index[c] for c in text], dtype=torch.long)
    windows = codes.unfold(0, context + 1, 1)
    x, y = windows[:, :context].contiguous(), windows[:, context].contiguous()
    cut = int(len(x) * (1 - val_fraction))
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut + context :], y[cut + context :]), vocab
