"""Racing optimizers on a surface in lock step, recording what the notes draw.

Every run is its own descent optimizer over its own 2-D point, built as a user builds
it (``catalog.Entry.make``), fed the autograd gradient of the surface and stepped with
``opt.step()``. The only sharing is the gradient: the points of all runs still going
are stacked into one batch, so one forward and one backward per step serve every run
(each row's gradient is the same arithmetic as a lone point's). After each step the
state of each optimizer is read from ``opt.state[p]`` — the moments the step used,
not recomputed.

Where the time goes, for 2-D points: a step of a descent optimizer over a two-element
tensor is mostly Python bookkeeping around a dozen tiny tensor ops. ``flat=False``
(no flat storage to keep in sync) and ``compile=False`` (no kernel lookup; runs this
short stay eager anyway) are the cheapest path through the same rules; the shared
backward saves one autograd pass per extra run. docs/playground.md has the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..catalog import set_mode
from ..landscapes.surfaces import Surface
from .requests import RunSpec

DTYPE = torch.float64


@dataclass
class Trace:
    """One run: positions, losses and gradients at frames 0 … steps (frame k is the
    point after k steps; NaN from where the run stopped), and its state after each
    step (frame 0: none yet, NaN)."""

    spec: RunSpec
    xy: np.ndarray
    loss: np.ndarray
    grad: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)
    #: the frame at which it left the surface's box or hit NaN/inf (then no point is
    #: drawn for it), or None
    stopped_at: int | None = None
    #: stopped without having reached the goal first (on the saddles leaving the box
    #: downhill after escaping is not divergence)
    diverged: bool = False
    #: the first frame within the goal (a minimum, or escaped from a saddle), or None
    reached_at: int | None = None


def race(surface: Surface, specs: list[RunSpec], steps: int) -> list[Trace]:
    """Run every spec for ``steps`` steps from ``surface.start``, in lock step."""
    n = len(specs)
    params = [torch.tensor(surface.start, dtype=DTYPE, requires_grad=True) for _ in specs]
    opts = [s.entry.make([p], **s.kwargs) for s, p in zip(specs, params)]
    # an optimizer that evaluates elsewhere than it trains (Schedule-Free: gradients at y,
    # the model at x) trains in training mode and is drawn where it says to evaluate
    modal = [callable(getattr(o, "eval", None)) for o in opts]
    for o in opts:
        set_mode(o, True)
    shown: dict[tuple[int, int], list[float]] = {}
    for p in params:
        # one gradient tensor per param, refilled each step: the engine then finds the
        # gradient where it left it instead of gathering a new one
        p.grad = torch.zeros_like(p)
    frames: list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]] = []
    states: list[list[dict[str, torch.Tensor]]] = [[] for _ in specs]
    noise = surface.noise_stream()
    alive = list(range(n))
    escaped = torch.zeros(n, dtype=torch.bool)
    stopped: list[int | None] = [None] * n
    box = surface.box
    for t in range(steps + 1):
        if not alive:
            break
        X = torch.stack([params[i].detach() for i in alive]).requires_grad_()
        f = surface.f(X)
        xi = noise.draw()
        total = f.sum() + (surface.noise * (X * xi).sum() if xi is not None else 0.0)
        (G,) = torch.autograd.grad(total, X)
        frames.append((alive, X.detach(), f.detach(), G))
        if t == steps:
            break
        for j, i in enumerate(alive):
            params[i].grad.copy_(G[j])
            opts[i].step()
            states[i].append(_snapshot(opts[i].state[params[i]]))
        if surface.escape is not None:
            escaped[alive] |= surface.gap(X.detach()) == 0
        # the box test on two Python floats per run: a few torch ops per step on these
        # tiny tensors would cost as much as an optimizer's step
        for i in alive:
            at = params[i].tolist()
            if modal[i]:
                set_mode(opts[i], False)
                at = shown[(t + 1, i)] = params[i].tolist()
                set_mode(opts[i], True)
            if not _inside(at, box):
                stopped[i] = t + 1
        alive = [i for i in alive if stopped[i] is None]
    xy, loss, grad = _unstack(frames, n, steps)
    if shown:
        (t, i) = zip(*shown)
        xy[list(t), list(i)] = torch.tensor(list(shown.values()), dtype=DTYPE)
        loss[list(t), list(i)] = surface.f(xy[list(t), list(i)]).detach()
    stacked = [_stack(s, steps) for s in states]
    for opt, store in zip(opts, stacked):
        _initial(opt, store)
    return _traces(surface, specs, xy, loss, grad, stacked, stopped, escaped)


def _initial(opt: torch.optim.Optimizer, store: dict[str, torch.Tensor]) -> None:
    """Frame 0: each state buffer's value before the first step, as the rule fills it
    (zeros; Adagrad's initial accumulator; NAdam's product of μ starts at 1)."""
    chain = opt.chain(opt.param_groups[0])
    for key, series in store.items():
        if key in chain.state:
            series[0] = chain.fill(key, opt.param_groups[0])
        elif key in chain.host:
            series[0] = chain.host_init(key)


def _inside(p: list[float], box: tuple[float, float, float, float]) -> bool:
    """``Surface.inside_box`` for one point (NaN compares false, so it is outside)."""
    x0, x1, y0, y1 = box
    return x0 <= p[0] <= x1 and y0 <= p[1] <= y1


def _snapshot(state: dict) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in state.items()
        if k != "step" and isinstance(v, torch.Tensor) and v.numel() <= 2
    }


def _unstack(frames, n: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xy = torch.full((steps + 1, n, 2), math.nan, dtype=DTYPE)
    loss = torch.full((steps + 1, n), math.nan, dtype=DTYPE)
    grad = torch.full((steps + 1, n, 2), math.nan, dtype=DTYPE)
    for t, (rows, X, f, G) in enumerate(frames):
        xy[t, rows], loss[t, rows], grad[t, rows] = X, f, G
    return xy, loss, grad


def _stack(snapshots: list[dict[str, torch.Tensor]], steps: int) -> dict[str, torch.Tensor]:
    """State after steps 1 … len(snapshots), at frames 1 …; NaN at frame 0 and after."""
    out = {}
    for key, first in snapshots[0].items() if snapshots else ():
        full = torch.full((steps + 1, *first.shape), math.nan, dtype=DTYPE)
        full[1 : len(snapshots) + 1] = torch.stack([s[key] for s in snapshots]).to(DTYPE)
        out[key] = full
    return out


def _traces(surface, specs, xy, loss, grad, states, stopped, escaped) -> list[Trace]:
    gap = surface.gap(xy.nan_to_num(nan=math.inf))
    if surface.escape is not None:
        escaped = escaped | (gap == 0).any(dim=0)
    out = []
    for i, spec in enumerate(specs):
        hits = (gap[:, i] == 0).nonzero().flatten()
        reached = int(hits[0]) if len(hits) else None
        out.append(
            Trace(
                spec,
                xy[:, i].numpy(),
                loss[:, i].numpy(),
                grad[:, i].numpy(),
                {k: v.numpy() for k, v in states[i].items()},
                stopped[i],
                stopped[i] is not None and not bool(escaped[i]),
                reached,
            )
        )
    return out
