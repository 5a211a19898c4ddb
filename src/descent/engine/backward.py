"""The step inside backward: each param is updated as soon as its gradient is complete,
and the gradient is freed, so a training step never holds a full set of gradients.

Autograd calls a param's post-accumulate-grad hook once per backward, after every use of
the param has contributed to its gradient. A large param is stepped right there (one
kernel call over its gradient, which is then dropped); small ones wait until a staging
chunk's worth has arrived, or the backward ends (a callback queued on autograd's engine
at the first hook of each backward), and step together. The pieces are those of an
ordinary step with fresh gradients, every number the same, so the parameters come out
bit for bit as from ``backward(); step()``. Once a bucket's params share their step
count (every one had a gradient last time), each update is a kernel call prepared once
and reused every backward, its numbers made at the step's first call: the hooks cost
next to nothing beside the kernels (a 4-layer transformer, 17 updates a backward: 3.1
ms of updates a step down to 1.9, the kernels' own time).

Where freed gradients go back to the OS, the block cache of the C++ module keeps the
freed ones (up to twice the largest) for the next gradients backward makes
(:func:`keep_blocks`), so returned memory costs no page faults.

Under DDP the local gradient a hook sees is not yet averaged: there the step runs in a
communication hook, after each gradient bucket's all-reduce, on the averaged bucket.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import native
from .grads import STAGE, Grads, check_grad
from .layout import LARGE


def return_freed_memory() -> bool:
    """Have glibc hand freed blocks of :data:`BLOCK_LEAST` bytes or more back to the OS
    (CPU processes on Linux).

    glibc raises its mmap threshold each time a large mmap'ed block is freed, after which
    blocks that size come from the heap and stay there when freed: gradients freed one by
    one inside backward would keep the process's resident memory where it was (measured on
    a 50 M-param Adam loop: peak RSS 988 MB instead of 828 MB). Setting the threshold pins
    it, so each large freed block's memory is returned at once, unless the block cache
    (:func:`keep_blocks`) keeps it for the next gradient. Pinned at glibc's initial 128
    KiB, every block of an activation or gradient from there to 1 MiB was page-faulted in
    afresh at each use (a 4-layer transformer: 17.5 ms an iteration against 14.5). True
    when set."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, BLOCK_LEAST))


_M_MMAP_THRESHOLD = -3

#: blocks the block cache keeps and glibc hands back at once: this many bytes or more
BLOCK_LEAST = 1 << 20

#: what each :class:`BackwardSteps` that returns freed memory asks the block cache to
#: keep (bytes), by ``id``; the cache keeps the largest of them
_keep: dict[int, int] = {}


def keep_blocks() -> bool:
    """Put torch's CPU allocator behind the C++ module's block cache, sized for what
    :data:`_keep` asks (nothing: the cache steps aside). A gradient freed inside backward
    then waits there for the next gradient backward makes, which takes its memory instead
    of page-faulting new memory in (a 50 M-param MLP: 112 ms an iteration down to 66),
    while the process's resident memory stays a gradient or two above what the step
    needs. True when the cache is as asked; False where the module is not available (yet:
    it is built in the background)."""
    mod = native.module()
    if mod is None:
        return False
    return bool(mod.block_cache(max(_keep.values(), default=0), BLOCK_LEAST))


class BackwardSteps:
    """Hooks that step ``engine``'s params as their gradients arrive.

    ``groups()`` and ``state()`` give the param groups and the state mapping at the time
    of each backward (so schedulers and edits between steps act as usual); ``stepped()``
    is called after each backward's last update. ``ddp``: the DistributedDataParallel
    module whose averaged gradient buckets to step from. ``release``: see
    :func:`return_freed_memory`."""

    def __init__(
        self,
        engine: Any,
        groups: Callable[[], Sequence[dict]],
        state: Callable[[], dict],
        stepped: Callable[[], None],
        ddp: Any = None,
        release: bool = True,
    ):
        if engine.guard:
            raise ValueError(
                "skip_nonfinite=True cannot step inside backward: whether to skip is decided from every "
                "gradient of the step, and the first params are updated before the last gradients exist"
            )
        params = [p for g in groups() for p in g["params"]]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a param listed twice cannot step inside backward (it would step once)")
        self.engine = engine
        self.groups, self.state, self.stepped = groups, state, stepped
        self.lock = threading.Lock()
        self.active = self.queued = False
        self.tasks: list[Any] = []
        self.where: dict[int, tuple] = {}
        self.futures: list[Any] = []
        self.kept = False
        self._begin()  # lay the params out now, before a forward saves them for backward
        self._end()
        if ddp is not None:
            self._hook_ddp(ddp)
        elif release:
            return_freed_memory()
            # the next gradient takes a freed one's memory: keep two of the largest's worth
            # (one alone would push out a large block for each smaller one freed after it);
            # gradients all under BLOCK_LEAST stay in glibc's heap, with nothing to keep
            largest = max((p.numel() * p.element_size() for p in params if p.device.type == "cpu"), default=0)
            if largest >= BLOCK_LEAST:
                _keep[id(self)] = 2 * largest
                self.kept = keep_blocks()
        arrived = self._started if ddp is not None else self._arrived
        self.handles = [p.register_post_accumulate_grad_hook(arrived) for p in params]

    def remove(self) -> None:
        """Stop stepping inside backward (``optimizer.step()`` works again)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        for h in getattr(self, "ddp_handles", []):
            h.remove()
        if _keep.pop(id(self), None) is not None:
            keep_blocks()

    # -- one backward --------------------------------------------------------------------
    def _begin(self) -> None:
        """Everything a step does before its first update (buckets, edits of the state)."""
        self.active, self.queued = True, False
        if not self.kept and id(self) in _keep:  # (the C++ module was still being built)
            self.kept = keep_blocks()
        self.tasks = self.engine.prepare(self.groups(), self.state())
        self.where = {id(p): (t, i) for t in self.tasks for i, p in enumerate(t.b.params)}
        #: per bucket: the gradients that arrived and wait for their step, by index
        self.grads = {id(t.b): [None] * len(t.b.params) for t in self.tasks}
        self.pending: dict[int, list[int]] = {id(t.b): [] for t in self.tasks}
        self.waiting = dict.fromkeys(self.pending, 0)

    def _started(self, p: Tensor) -> None:
        """A gradient of this backward arrived: begin, and have autograd call
        :meth:`_finish` when the backward ends (this hook runs on autograd's thread)."""
        with self.lock:
            if not self.active:
                self._begin()
            if not self.queued:
                torch.autograd.Variable._execution_engine.queue_callback(self._finish)
                self.queued = True

    def _arrived(self, p: Tensor) -> None:
        self._started(p)
        found = self.where.get(id(p))
        if found is not None:  # (None: a param the groups no longer hold)
            with self.lock:
                self._take(found, p, p.grad)

    def _take(self, found: tuple, p: Tensor, g: Tensor | None, free: bool = True) -> None:
        task, i = found
        if g is None:
            return
        b = task.b
        if g.dtype != b.dtype or g.shape != b.shapes[i] or g.layout != torch.strided or g.device != b.device:
            check_grad(self.engine.name, task.name(p), p, g)
        key = id(b)
        self.grads[key][i] = g
        if not b.flat or b.sharded or b.numels[i] >= LARGE:
            self._step(task, [i])
            if free:
                p.grad = None
            return
        if free:
            p.grad = None  # held here until its chunk steps
        self.pending[key].append(i)
        self.waiting[key] += b.numels[i]
        if self.waiting[key] >= STAGE:
            self._flush(task)

    def _flush(self, task: Any) -> None:
        key = id(task.b)
        if self.pending[key]:
            self._step(task, sorted(self.pending[key]))
            self.pending[key], self.waiting[key] = [], 0

    def _step(self, task: Any, indices: list[int]) -> None:
        grads = self.grads[id(task.b)]
        with torch.no_grad():
            self.engine.step_some(task, indices, Grads(None, grads), self.state())
        for i in indices:
            grads[i] = None

    def _finish(self) -> None:
        if self.futures:  # DDP: each bucket steps once its all-reduce is done
            torch.futures.wait_all(self.futures)
            self.futures = []
        with self.lock:
            self._end()
        self.stepped()

    def _end(self) -> None:
        for task in self.tasks:
            self._flush(task)
        self.engine.settle_some(self.state(), self.tasks)
        self.active = self.queued = False
        self.tasks, self.where = [], {}

    # -- DDP -----------------------------------------------------------------------------
    def _hook_ddp(self, ddp: Any) -> None:
        """Step each DDP gradient bucket once its all-reduce has averaged it: DDP's own
        all-reduce, then the update of the bucket's params from the averaged buffer."""
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def hook(process_group, bucket):  # (DDP checks annotations: none, or its own types)
            params, grads = bucket.parameters(), bucket.gradients()

            def then(f: torch.futures.Future) -> Tensor:
                if not self.handles:  # removed: DDP keeps the hook, which now only averages
                    return f.value()
                with self.lock:
                    if not self.active:  # the all-reduce finished before any hook ran
                        self._begin()
                    for p, g in zip(params, grads):
                        found = self.where.get(id(p))
                        if found is not None:
                            self._take(found, p, g, free=False)
                return f.value()

            fut = default_hooks.allreduce_hook(process_group, bucket).then(then)
            self.futures.append(fut)
            return fut

        ddp.register_comm_hook(None, hook)

        def drop_grads(module, args):
            # DDP writes the averaged gradients into .grad when backward ends, and the next
            # backward would add to them: they are dropped when the next forward starts
            if self.handles:
                for group in self.groups():
                    for p in group["params"]:
                        p.grad = None

        self.ddp_handles = [ddp.register_forward_pre_hook(drop_grads)]
