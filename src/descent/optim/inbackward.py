"""``descent.step_in_backward``: update each param while backward is still running."""

from __future__ import annotations

from typing import Any

import torch

from ..engine import backward, native
from ..engine.backward import BackwardSteps
from .base import RuleOptimizer


class InBackward:
    """What :func:`step_in_backward` returns: :meth:`remove` goes back to ``step()``."""

    def __init__(self, optimizer: RuleOptimizer, steps: BackwardSteps):
        self.optimizer = optimizer
        self.steps = steps

    def remove(self) -> None:
        self.steps.remove()
        if self.optimizer._in_backward is self:
            self.optimizer._in_backward = None


#: ``release_memory="auto"`` without the C++ module's block cache (no compiler, or
#: ``DESCENT_NATIVE=0``) returns freed gradients to the OS only when the CPU params'
#: gradients total at least this many bytes: then every new gradient is page-faulted in,
#: which costs more than the memory is worth below. Measured on the 2-core machine, Adam,
#: ms/iteration and peak RSS, returned vs kept, without the cache: 4-layer transformer (12
#: MB of gradients) 17.5 ms / 283 MB vs 12.1 ms / 291 MB; 50 M-param MLP (200 MB) 111 ms /
#: 829 MB vs 68 ms / 1,005 MB. With the cache it returns them always.
RELEASE_MIN = 64 << 20


def step_in_backward(
    model: torch.nn.Module | None, optimizer: RuleOptimizer, *, release_memory: bool | str = "auto"
) -> InBackward:
    """Make ``optimizer`` step each param inside backward, as soon as its gradient is
    complete, and free that gradient: a training step then never holds a full set of
    gradients (peak memory falls by up to their size). The numbers are those of
    ``backward(); optimizer.step()``, bit for bit.

    The loop becomes ``loss.backward()`` alone — no ``optimizer.step()`` (it raises: the
    step already ran), no ``zero_grad()`` needed (gradients are gone after each
    backward). Schedulers, param groups and ``state_dict`` work as usual. Under
    ``DistributedDataParallel`` pass the DDP module as ``model``: each gradient bucket is
    stepped after its all-reduce (gradients are then kept by DDP, as DDP keeps them).

    It cannot combine with what needs every gradient before the first update: clipping by
    the global norm (``clip_grad_norm_`` after backward finds no gradients),
    ``GradScaler`` (its unscale and inf check come after backward; ``scaler.step``
    raises), ``skip_nonfinite=True`` (refused here), and gradient accumulation over
    several backward calls (each backward is a step).

    ``release_memory`` (CPU, Linux): pin glibc's mmap threshold (at 1 MiB) so that each
    gradient freed inside backward goes back to the OS at once; without it glibc keeps
    the freed blocks and the process's resident memory does not fall (a process-wide
    allocator setting; see ``descent.engine.backward.return_freed_memory``). So that the
    next gradient need not be page-faulted in afresh, a block cache then stands in front
    of torch's CPU allocator (in the C++ module, once built): a freed block of 1 MiB or
    more waits there for the next allocation it fits, holding at most twice the largest
    gradient. Measured on the 2-core machine (Adam, ms/iteration and peak RSS): a 50
    M-param MLP 66 ms / 849 MB, against 70 ms / 1,004 MB kept by glibc and 112 ms
    returned without the cache; an embedding model 13 ms against 22 ms kept by glibc
    (its 51 MB gradient is page-faulted in at every backward otherwise, in torch's own
    loop too). ``"auto"`` (the default) returns memory wherever the block cache can be
    had and a gradient is 1 MiB or more (smaller ones stay in glibc's heap anyway), else
    only when the CPU params' gradients total 64 MiB or more (:data:`RELEASE_MIN`);
    ``True`` always, ``False`` never. ``remove()`` takes the cache
    away again.
    """
    if not isinstance(optimizer, RuleOptimizer):
        raise TypeError(f"step_in_backward needs a descent optimizer, got {type(optimizer).__name__}")
    if type(optimizer).step is not RuleOptimizer.step:
        name = type(optimizer).__name__
        raise TypeError(f"{name} needs its own step() (a closure), so it cannot step inside backward")
    if optimizer.whole_rules:
        name = type(optimizer).__name__
        raise TypeError(
            f"{name} steps same-shape tensors together (matrix rules), so it cannot step each param "
            "inside backward as its gradient arrives; call optimizer.step() after backward"
        )
    if optimizer._in_backward is not None:
        raise RuntimeError(f"this {type(optimizer).__name__} already steps inside backward")
    if release_memory not in (True, False, "auto"):
        raise ValueError(f"release_memory must be True, False or 'auto', got {release_memory!r}")
    from torch.nn.parallel import DistributedDataParallel

    ddp = model if isinstance(model, DistributedDataParallel) else None
    steps = BackwardSteps(
        optimizer._engine,
        lambda: optimizer.param_groups,
        lambda: optimizer.state,
        lambda: _stepped(optimizer),
        ddp=ddp,
        release=_release(release_memory, optimizer),
    )
    handle = InBackward(optimizer, steps)
    optimizer._in_backward = handle
    return handle


def _release(release_memory: bool | str, optimizer: RuleOptimizer) -> bool:
    """Whether to return gradients freed inside backward to the OS (see step_in_backward)."""
    cpu = [p for g in optimizer.param_groups for p in g["params"] if p.device.type == "cpu"]
    if release_memory == "auto":
        sizes = [p.numel() * p.element_size() for p in {id(p): p for p in cpu}.values()]
        cache = native.unavailable() is None and native.why_not() is None
        if cache and max(sizes, default=0) >= backward.BLOCK_LEAST:  # (a gradient the cache can keep)
            return True
        return sum(sizes) >= RELEASE_MIN
    return bool(release_memory) and bool(cpu)


def _stepped(optimizer: Any) -> None:
    # lr schedulers warn when they step before the optimizer has; this optimizer has
    optimizer._opt_called = True
