"""Running descent's optimizers on a surface: one path as a user would, or many at once.

:func:`trajectory` is the plain loop (one point, one optimizer, ``loss.backward()``,
``opt.step()``), as a user writes it. :func:`run_batch` runs many candidate settings of
one optimizer class together: ONE optimizer instance over a batch of points, one
backward per step for the whole batch. Tuning scores the batch, and the pictures draw
the winning row of that batch.

How run_batch puts different learning rates in one param group. Every optimizer in the
catalog, without weight decay, updates ``w ← w − lr·u_t`` where the direction ``u_t``
and the state depend only on the gradients seen, never on ``lr``. So a row ``P_k`` stepped
with ``lr = 1`` while being fed the gradient ``∇f(X_k)`` at the point
``X_k = X_0 + lr_k·(P_k − X_0)`` moves ``X_k`` exactly as ``lr = lr_k`` would. Whether a
setting has that property is checked, not assumed (:func:`lr_linear`); one that does
not (weight decay, for one) gets a param group per learning rate instead. Candidates
that differ in anything else (momentum, betas …) are separate param groups.
``tests/landscapes`` checks each catalog optimizer's batch rows against the same
setting run alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..catalog import Entry, set_mode
from .surfaces import Surface

DTYPE = torch.float64


def _start(surface: Surface, n: int = 1) -> Tensor:
    return torch.tensor([surface.start] * n, dtype=DTYPE)


@dataclass
class Path:
    """One run's positions (steps + 1, 2); NaN from the step it left the box."""

    xy: np.ndarray
    #: it left the box (or hit NaN/inf) before reaching the surface's goal; on the saddles
    #: leaving the box after escaping is just going on downhill, not divergence
    diverged: bool


def trajectory(surface: Surface, entry: Entry, lr: float, hyper: dict[str, Any], steps: int) -> Path:
    """One run from the surface's start, exactly as a user would write the loop."""
    p = torch.tensor(surface.start, dtype=DTYPE, requires_grad=True)
    opt = entry.make([p], lr=lr, **hyper)
    set_mode(opt, True)
    noise = surface.noise_stream()
    out = np.full((steps + 1, 2), np.nan)
    out[0] = surface.start
    escaped = False
    for t in range(1, steps + 1):
        opt.zero_grad()
        surface.loss(p, noise.draw()).backward()
        opt.step()
        set_mode(opt, False)  # the point to show (Schedule-Free's x; the param itself elsewhere)
        xy = p.detach().clone()
        set_mode(opt, True)
        if not bool(surface.inside_box(xy)):
            return Path(out, not escaped)
        out[t] = xy.numpy()
        escaped = escaped or (surface.escape is not None and bool(surface.gap(xy) == 0))
    return Path(out, False)


@dataclass
class _Group:
    """One param group of the batch: rows ``lo:hi`` of the batch, stepped as ``P``."""

    param: Tensor
    lo: int
    hi: int
    #: per-row lr scale (rows mode) or None (the group's own lr is the real one)
    scale: Tensor | None
    options: dict[str, Any] = field(default_factory=dict)


def lr_linear(entry: Entry, hyper: dict[str, Any], steps: int = 4) -> bool:
    """Whether ``entry`` with ``hyper`` moves a param by exactly twice as much at twice the
    learning rate, for the same gradients: its update is ``lr·u_t`` with ``u_t`` free of
    ``lr`` and of the param itself (weight decay, for one, breaks that)."""
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(steps, 4, generator=gen, dtype=DTYPE)
    moves = []
    for lr in (1e-2, 2e-2):
        p = torch.full((4,), 3.0, dtype=DTYPE, requires_grad=True)
        opt = entry.make([p], lr=lr, **hyper)
        set_mode(opt, True)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        moves.append(p.detach() - 3.0)
    return torch.allclose(moves[1], 2 * moves[0], rtol=1e-9, atol=0)


def _plan(surface: Surface, entry: Entry, candidates: Sequence[tuple[float, dict]]) -> list[_Group]:
    """Param groups for the candidates, rows ordered as given."""
    groups: list[_Group] = []
    by_hyper: dict[str, list[int]] = {}
    for i, (_, hyper) in enumerate(candidates):
        by_hyper.setdefault(repr(sorted(hyper.items())), []).append(i)
    order = [i for rows in by_hyper.values() for i in rows]
    if order != list(range(len(candidates))):
        raise ValueError("candidates must list each hyperparameter setting's learning rates together")
    for rows in by_hyper.values():
        hyper = candidates[rows[0]][1]
        lrs = [candidates[i][0] for i in rows]
        if lr_linear(entry, hyper):
            P = _start(surface, len(rows)).requires_grad_()
            scale = torch.tensor(lrs, dtype=DTYPE)[:, None]
            groups.append(_Group(P, rows[0], rows[-1] + 1, scale, {"lr": 1.0, **hyper}))
        else:
            for i, lr in zip(rows, lrs):
                P = _start(surface).requires_grad_()
                groups.append(_Group(P, i, i + 1, None, {"lr": lr, **hyper}))
    return groups


def _positions(surface: Surface, groups: list[_Group]) -> Tensor:
    x0 = _start(surface)
    parts = []
    for g in groups:
        p = g.param.detach()
        parts.append(p if g.scale is None else x0 + g.scale * (p - x0))
    return torch.cat(parts)


#: The score is the worst gap over this last fraction of the steps.
TAIL = 0.1


@dataclass
class BatchResult:
    #: final positions (K, 2)
    final: Tensor
    #: rows that produced NaN/inf or left the surface's box before reaching the goal
    diverged: Tensor
    #: per row, the worst gap over the last 10 % of the steps (a saddle, once escaped,
    #: has gap 0 from then on)
    score: Tensor
    #: positions at every step (steps + 1, K, 2), when asked for
    history: Tensor | None = None

    def path(self, i: int, surface: Surface) -> Path:
        """Row ``i`` of the history as a :class:`Path` (NaN from where it left the box)."""
        if self.history is None:
            raise ValueError("run_batch(keep_history=True) keeps the positions a path needs")
        xy = self.history[:, i].numpy().copy()
        out = (~surface.inside_box(self.history[:, i])).nonzero()
        if len(out):
            xy[int(out[0]) :] = np.nan
        return Path(xy, bool(self.diverged[i]))


def run_batch(
    surface: Surface,
    entry: Entry,
    candidates: Sequence[tuple[float, dict[str, Any]]],
    steps: int,
    keep_history: bool = False,
) -> BatchResult:
    """Run every ``(lr, hyper)`` candidate of ``entry`` for ``steps`` steps at once."""
    groups = _plan(surface, entry, candidates)
    opt = entry.make([{"params": [g.param], **g.options} for g in groups])
    set_mode(opt, True)
    noise = surface.noise_stream()
    X = Y = _positions(surface, groups)
    diverged = torch.zeros(len(candidates), dtype=torch.bool)
    escaped = torch.zeros_like(diverged)
    score = torch.zeros(len(candidates), dtype=DTYPE)
    tail_from = steps - max(1, math.ceil(TAIL * steps))
    history = [X] if keep_history else None
    for t in range(1, steps + 1):
        Y = Y.clone().requires_grad_()  # gradients where the params are (Schedule-Free's y)
        (grad,) = torch.autograd.grad(surface.loss(Y, noise.draw()), Y)
        # A diverged row keeps NaN/inf out of its state; it is excluded either way.
        grad = torch.where(diverged[:, None], torch.zeros_like(grad), grad)
        for g in groups:
            g.param.grad = grad[g.lo : g.hi].clone()
        opt.step()
        Y = _positions(surface, groups)
        set_mode(opt, False)  # scored and drawn where the optimizer says to evaluate
        X = _positions(surface, groups)
        set_mode(opt, True)
        diverged |= ~surface.inside_box(X) & ~escaped
        gap = surface.gap(X)
        if surface.escape is not None:
            escaped |= ~diverged & (gap == 0)
            gap = torch.where(escaped, torch.zeros_like(gap), gap)
        if t > tail_from:
            score = torch.maximum(score, torch.nan_to_num(gap, nan=math.inf))
        if history is not None:
            history.append(X)
    hist = torch.stack(history) if history is not None else None
    return BatchResult(X, diverged, score, hist)
