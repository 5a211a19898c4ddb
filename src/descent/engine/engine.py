"""The step: for every param group, every bucket, every run, one kernel call.

A *run* is a maximal range of a bucket's params that have a gradient and share their
host scalars (``step``, NAdam's ``mu_product``), so they share every number the rule
needs. In the common case (all grads present, all params started together) a bucket
is one run: one kernel over the whole flat buffer. A param whose grad is ``None`` ends
a run, so it does not move and its state does not advance, as in torch.optim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, get_num_threads, set_num_threads

from ..rules.base import Chain
from .body import nonfinite
from .kernels import (
    KERNEL_MIN,
    PARALLEL_MIN,
    compile_mode,
    finite,
    fresh_scalars,
    kernel_for,
    pack,
    run_eager,
    scalar_tensor,
    warn,
)
from .storage import Bucket, plan, real_dtype

if TYPE_CHECKING:
    from ..optim.base import RuleOptimizer


@dataclass
class _Group:
    params: list
    n: int
    buckets: list[Bucket]


def _call(fn, args: list[Tensor], n: int) -> bool:
    """Run a kernel over ``n`` elements; False when a guarded kernel skipped the step."""
    if n < PARALLEL_MIN and args[0].device.type == "cpu" and (threads := get_num_threads()) > 1:
        # A short run costs less than waking the OpenMP team (on a busy machine far
        # less: 0.6 ms a call was measured for 4 K elements).
        set_num_threads(1)
        try:
            out = fn(args)
        finally:
            set_num_threads(threads)
    else:
        out = fn(args)
    return not out or not bool(out[0])


def _namer(group: dict[str, Any], gi: int):
    def name(p: Tensor) -> str:
        i = next(j for j, q in enumerate(group["params"]) if q is p)
        return f"param {i} of param group {gi} (shape {tuple(p.shape)})"

    return name


class Engine:
    def __init__(
        self,
        opt: RuleOptimizer,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
    ):
        for name, value in (("flat", flat), ("skip_nonfinite", skip_nonfinite)):
            if not isinstance(value, bool):
                raise TypeError(f"Invalid {name} setting: {value!r} (expected True or False)")
        self.opt = opt
        self.flat = flat
        #: skip (and count) a step whose gradients hold an inf or NaN
        self.guard = skip_nonfinite
        self.skipped = 0
        self.compile = compile_mode(compile)
        self.groups: list[_Group | None] = []
        #: set by load_state_dict: every bucket re-reads ``optimizer.state`` next step
        self.reload = False
        #: times another descent optimizer took params out of this one's buffers
        self.retaken = 0

    def prefetch(self) -> None:
        """Ask now for the kernels the first step will run: a cached one loads (a few ms),
        a missing one starts building while the model runs its first forward pass."""
        if self.compile is False:
            return
        try:
            self._prefetch()
        except Exception:  # only a head start: the first step asks again and reports errors
            return

    def _prefetch(self) -> None:
        for group in self.opt.param_groups:
            if group.get("differentiable"):  # stepped by engine/differentiable.py
                continue
            params = [p for p in group["params"] if self.flat or p.numel() >= KERNEL_MIN]
            if not params:
                continue
            chain = self.opt.chain(group)
            statics, names, _ = pack(next(fresh_scalars(chain, group)))
            for dtype, device in {(real_dtype(p.dtype), p.device) for p in params}:
                if device.type != "meta":
                    kernel_for(chain, statics, names, dtype, device, self.guard).ready(False)

    # -- the step ------------------------------------------------------------------------
    def step(self) -> None:
        opt = self.opt
        who = type(opt).__name__
        work = []
        # Collect every group's gradients before touching anything, so a bad gradient
        # (sparse) raises with no param or state changed.
        for gi, group in enumerate(opt.param_groups):
            if group.get("differentiable"):  # stepped by engine/differentiable.py
                continue
            chain = opt.chain(group)
            entry = self._entry(gi, group, chain)
            work.append((group, chain, entry, [b.collect(who, _namer(group, gi)) for b in entry.buckets]))
        self.reload = False
        plans = [
            (group, chain, b, b.runs(has, chain.host))
            for group, chain, entry, hass in work
            for b, has in zip(entry.buckets, hass)
        ]
        inside = False
        if self.guard:
            # skip_nonfinite: a step of one run checks its gradient inside its kernel; with
            # several runs every gradient is checked (one reduction each) before any write.
            spread = any(b.sharded for _, _, b, _ in plans)
            inside = not spread and sum(len(runs) for *_, runs in plans) == 1
            if not inside and not self._all_finite(plans, spread):
                self.skipped += 1
                return
        for group, chain, b, runs in plans:
            self._step_bucket(b, chain, group, runs, inside)

    def _step_bucket(
        self, b: Bucket, chain: Chain, group: dict[str, Any], runs: list[tuple[int, int]], guard: bool
    ) -> None:
        run = self._guarded_run if guard else self._run
        for a, c in runs:
            if not run(b, chain, group, a, c):
                self.skipped += 1
                return
        b.uniform = runs == [(0, len(b.params))]
        if 0 in b.exposed:
            for a, c in runs:
                for i in range(a, c):
                    if not b.exposed[i]:
                        self._expose(b, chain, i)

    @staticmethod
    def _all_finite(plans: list, spread: bool) -> bool:
        """Every gradient of the step is finite: one flag per run (per shard) kept on the
        device, one host read for the whole step."""
        flags = [
            nonfinite(g)
            for _, _, b, runs in plans
            for a, c in runs
            for _, g, _ in (b.pieces(a, c, ()) if b.sharded else [b.tensors(a, c, ())])
            if g.numel()
        ]
        device = next(b.device for _, _, b, _ in plans)
        bad = torch.stack([f.to(device) for f in flags]).any() if flags else torch.zeros((), dtype=torch.bool)
        if spread:  # sharded params: every rank must take the same decision
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                flag = bad.to(device=device, dtype=torch.float32).reshape(1)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                bad = flag[0] > 0
        return not bool(bad)

    def _guarded_run(self, b: Bucket, chain: Chain, group: dict[str, Any], a: int, c: int) -> bool:
        """:meth:`_run` that leaves params, state and step counts as they were when the
        gradient holds an inf or NaN; False when it did."""
        saved = [t.clone() for t in b.host.values()], b.t
        if self._run(b, chain, group, a, c, guard=True):
            return True
        for t, old in zip(b.host.values(), saved[0]):
            t.copy_(old)
        b.t = saved[1]
        return False

    def _run(
        self, b: Bucket, chain: Chain, group: dict[str, Any], a: int, c: int, guard: bool = False
    ) -> bool:
        """One kernel call (or eager pass) over params ``a..c-1``. With ``guard`` it
        writes nothing when the gradient is not finite, and returns False then."""
        whole = a == 0 and c == len(b.params)
        host = {k: (b.host[k] if whole else b.host[k][a:c]) for k in chain.host}
        steps = host["step"]
        # A run's params share their host scalars: after a whole-bucket run the bucket
        # keeps its step as a number (fill_ costs a third of += on a host tensor).
        if whole and b.t is not None:
            t = b.t + 1
            steps.fill_(t)
        else:
            steps += 1
            t = steps[0].item()
        b.t = t if whole else None
        if len(host) == 1:
            values = {"step": t}
        else:
            chain.advance(group, t, host)
            values = {k: v[0].item() for k, v in host.items()}
        pieces = b.pieces(a, c, chain.state) if b.sharded else [b.tensors(a, c, chain.state)]
        if not pieces or pieces[0][0].numel() == 0:
            return True
        statics, names, numbers = pack(chain.scalars(group, t, values))
        first = pieces[0][0]
        scal = scalar_tensor(numbers, first)
        kern = None
        if self.compile is not False:  # one lookup per run; the pieces share dtype and device
            kern = b.kernels.get((chain, statics, names, guard))
            if kern is None:
                kern = kernel_for(chain, statics, names, first.dtype, first.device, guard)
                b.kernels[(chain, statics, names, guard)] = kern
        for p, g, bufs in pieces:  # several only for sharded params: one per local shard
            n = p.numel()
            wait = True if self.compile is True else None
            if kern is not None and p.dim() == 1 and n >= KERNEL_MIN and kern.ready(wait):
                if not _call(kern.fn, [p, g, scal, *bufs], n):
                    return False
                continue
            if guard and not finite(g):
                return False
            run_eager(chain, statics, names, scal, p, g, bufs)
        return True

    # -- buckets and state ---------------------------------------------------------------
    def _entry(self, gi: int, group: dict[str, Any], chain: Chain) -> _Group:
        while len(self.groups) <= gi:
            self.groups.append(None)
        entry = self.groups[gi]
        params = group["params"]
        fresh = (
            entry is None
            or entry.params is not params
            or entry.n != len(params)
            or not all(b.intact() for b in entry.buckets)
            or any(b.retiled() for b in entry.buckets)
        )
        if fresh:
            if entry is not None and any(b.taken() for b in entry.buckets):
                self._taken()
            buckets = [Bucket(ps, f, tiled, sh) for ps, f, tiled, sh in plan(params, self.flat)]
            entry = _Group(params, len(params), buckets)
            self.groups[gi] = entry
        for b in entry.buckets:
            grown = self._prepare(b, chain, group)
            if fresh or self.reload or (grown and 1 in b.exposed):
                self._adopt(b, chain)
        return entry

    def _taken(self) -> None:
        """Another descent optimizer re-homed this one's params; moving them back is a
        full copy, harmless once (a rebuilt optimizer) but costly on every step."""
        self.retaken += 1
        if self.retaken == 3:
            warn(
                f"descent: another optimizer keeps taking this {type(self.opt).__name__}'s params "
                "into its own flat buffer, so each step moves them back (a full copy; the numbers "
                "stay right). Step the params with one optimizer, or pass flat=False to one of them."
            )

    def _prepare(self, b: Bucket, chain: Chain, group: dict[str, Any]) -> bool:
        """Allocate the buffers ``chain`` needs that ``b`` lacks (the first step, or a
        flag such as ``amsgrad`` switched on); True when it allocated any."""
        grown = False
        for name in chain.host:
            if name not in b.host:
                b.allocate_host(name, chain.host_init(name), chain.host_dtype(name))
                grown = True
        for name in chain.state:
            if name not in b.state:
                b.allocate(name, chain.fill(name, group))
                grown = True
        return grown

    def _adopt(self, b: Bucket, chain: Chain) -> None:
        """Take over whatever ``optimizer.state`` holds for ``b``'s params (a loaded
        checkpoint, AdaGrad's initial state, a buffer new to the chain): copy it into
        the buffers and leave views in its place."""
        state = self.opt.state
        for i, p in enumerate(b.params):
            st = state.get(p)
            if not st:
                for k in chain.host:
                    b.host[k][i] = chain.host_init(k)
                b.exposed[i] = 0
                continue
            step = st.get("step")
            started = any(isinstance(st.get(k), Tensor) for k in chain.state)
            b.host["step"][i] = float(step) if step is not None else float(started)
            for k in chain.host[1:]:
                if st.get(k) is not None:
                    b.host[k][i] = float(st[k])
            for name in chain.state:
                old = st.get(name)
                if isinstance(old, Tensor):
                    b.state_view(name, i).copy_(old)
            self._expose(b, chain, i)
        b.uniform = False
        b.t = None

    def _expose(self, b: Bucket, chain: Chain, i: int) -> None:
        """Publish param ``i``'s state in ``optimizer.state`` as views of the buffers."""
        entries: dict[str, Tensor] = {}
        if self.opt.state_step:
            entries["step"] = b.host["step"][i]
        for k in chain.host[1:]:
            entries[k] = b.host[k][i]
        for name in chain.state:
            entries[name] = b.state_view(name, i)
        if entries:
            self.opt.state[b.params[i]].update(entries)
        b.exposed[i] = 1

    # -- gradients -----------------------------------------------------------------------
    def zero_grads_in_place(self) -> bool:
        """Zero every flat gradient buffer in one op each; True when that covered every
        param (all grads are views), so nothing is left to zero one by one."""
        buckets = [b for e in self.groups if e for b in e.buckets]
        if not buckets or not all(b.grads_in_place() for b in buckets):
            return False
        if sum(len(e.params) for e in self.groups if e) != sum(
            len(g["params"]) for g in self.opt.param_groups
        ):
            return False
        for b in buckets:
            if b.own_grads:
                b.G.zero_()
            else:  # the shared buffer holds other params' gradients too
                torch._foreach_zero_(b.gviews)
        return True
