"""The notes' own interface: ``optimizer.update(params, grads)`` on dicts of NumPy arrays.

The notes (and the book their code comes from) keep a network's parameters and
gradients in dicts of NumPy arrays and call ``optimizer.update(params, grads)``. These
classes do exactly that, through the same rules as ``descent.Adam`` & co.: the arrays
are shared with torch (no copy) and updated in place, so a learner following the notes
with a NumPy network gets the real thing::

    from descent.numpy import Adam
    opt = Adam(lr=0.001)
    for step in range(1000):
        grads = network.gradient(x, t)         # {"W1": ndarray, "b1": ndarray, ...}
        opt.update(network.params, grads)      # params updated in place

A key missing from ``grads`` is not updated (and its state does not advance), as a
``None`` gradient in torch.optim. Defaults follow the notes' code: ``lr=0.01`` for the
SGD family, AdaGrad and RMSprop with ε = 1e-7, Adam with lr 0.001, β = (0.9, 0.999),
ε = 1e-8. ``Nadam`` is the notes' plain Nadam (no momentum schedule) unless
``momentum_decay`` asks for Dozat's schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from . import optim, rules

#: Adam with Nesterov momentum and no momentum schedule, β₁ᵗ exact in float64.
PlainNadam = optim.compose(
    "PlainNadam",
    rules.NesterovEMA(schedule=False),
    rules.EMAOfSquares(),
    defaults={"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8},
    doc="Nadam without a momentum schedule: u = β₁·m_t/(1 − β₁^{t+1}) + (1 − β₁)·g_t/(1 − β₁^t).",
)


class NotesOptimizer:
    """Base class: wraps a descent optimizer around dicts of arrays."""

    def __init__(self, cls: type[torch.optim.Optimizer], **hyper: Any):
        self._cls = cls
        self._hyper = hyper
        self._params: dict[str, torch.nn.Parameter] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self._opt: torch.optim.Optimizer | None = None

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The underlying descent optimizer (``None`` before the first update)."""
        return self._opt

    def _bind(self, params: Mapping[str, np.ndarray]) -> None:
        for key, array in params.items():
            if not isinstance(array, np.ndarray):
                raise TypeError(f"params[{key!r}] must be a NumPy array, got {type(array).__name__}")
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"params[{key!r}] must be a floating-point array, got dtype {array.dtype}")
            if not array.flags.writeable:
                raise ValueError(f"params[{key!r}] is read-only; the update is in place")
            if self._arrays.get(key) is array:
                continue
            tensor = torch.from_numpy(array)
            if key in self._params:
                if self._params[key].shape != tensor.shape:
                    raise ValueError(
                        f"params[{key!r}] changed shape from {tuple(self._params[key].shape)} "
                        f"to {array.shape}"
                    )
                self._params[key].data = tensor
            else:
                self._params[key] = torch.nn.Parameter(tensor)
                if self._opt is not None:
                    self._opt.add_param_group({"params": [self._params[key]]})
            self._arrays[key] = array
        if self._opt is None:
            # flat=False: the arrays are the user's storage, so the rule runs on them.
            self._opt = self._cls(list(self._params.values()), flat=False, compile=False, **self._hyper)

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Apply one step to every array in ``params`` that has a gradient in ``grads``."""
        unknown = set(grads) - set(params)
        if unknown:
            raise KeyError(f"grads has keys that params lacks: {sorted(unknown)}")
        self._bind(params)
        for key, p in self._params.items():
            g = grads.get(key)
            if g is None:
                p.grad = None
                continue
            g = np.asarray(g)
            if g.shape != p.shape:
                raise ValueError(f"grads[{key!r}] has shape {g.shape}, params[{key!r}] has {tuple(p.shape)}")
            p.grad = torch.from_numpy(np.ascontiguousarray(g, dtype=self._arrays[key].dtype))
        assert self._opt is not None
        self._opt.step()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({args})"


class SGD(NotesOptimizer):
    """``W ← W − η·∂L/∂W``."""

    def __init__(self, lr: float = 0.01):
        super().__init__(optim.SGD, lr=lr)


class Momentum(NotesOptimizer):
    """``v ← α·v − η·∂L/∂W;  W ← W + v`` (the notes' SGDM)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(optim.SGD, lr=lr, momentum=momentum)


class Nesterov(NotesOptimizer):
    """cs231n's Nesterov: ``v_prev = v; v = μv − η·dx; x += −μ·v_prev + (1 + μ)·v``."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(optim.SGD, lr=lr, momentum=momentum, nesterov=True)


class AdaGrad(NotesOptimizer):
    """``h ← h + g⊙g;  W ← W − η·g/(√h + ε)``."""

    def __init__(self, lr: float = 0.01, eps: float = 1e-7):
        super().__init__(optim.Adagrad, lr=lr, eps=eps)


class RMSprop(NotesOptimizer):
    """``cache ← ρ·cache + (1 − ρ)·g²;  W ← W − η·g/(√cache + ε)``."""

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, eps: float = 1e-7):
        super().__init__(optim.RMSprop, lr=lr, alpha=decay_rate, eps=eps)


class AdaDelta(NotesOptimizer):
    """Zeiler (2012), with the paper's ρ = 0.95 and ε = 1e-6."""

    def __init__(self, rho: float = 0.95, eps: float = 1e-6, lr: float = 1.0):
        super().__init__(optim.Adadelta, lr=lr, rho=rho, eps=eps)


class Adam(NotesOptimizer):
    """``m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ);  W ← W − η·m̂/(√v̂ + ε)``."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(optim.Adam, lr=lr, betas=(beta1, beta2), eps=eps)


class Nadam(NotesOptimizer):
    """Adam with Nesterov momentum, as the notes name it: no momentum schedule,
    ``m̂ = β₁·m_t/(1 − β₁^{t+1}) + (1 − β₁)·g_t/(1 − β₁^t);  W ← W − η·m̂/(√v̂ + ε)``.

    ``momentum_decay=ψ`` runs Dozat's μ-schedule instead, ``μ_t = β₁(1 − ½·0.96^{tψ})``:
    ``descent.NAdam``'s (and torch.optim's) with ψ = 0.004 by default there.
    """

    def __init__(
        self,
        lr: float = 0.002,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        momentum_decay: float | None = None,
    ):
        if momentum_decay is None:
            super().__init__(PlainNadam, lr=lr, betas=(beta1, beta2), eps=eps)
        else:
            super().__init__(optim.NAdam, lr=lr, betas=(beta1, beta2), eps=eps, momentum_decay=momentum_decay)


__all__ = ["AdaDelta", "AdaGrad", "Adam", "Momentum", "Nadam", "Nesterov", "NotesOptimizer", "RMSprop", "SGD"]
