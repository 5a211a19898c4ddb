"""The step: for every param group, every bucket, every run, its kernel calls.

A *run* is a maximal range of a bucket's params that have a gradient and share their
host scalars (``step``, NAdam's ``mu_product``), so they share every number the rule
needs. In the common case (all grads present, all params started together) a bucket
is one run. A param whose grad is ``None`` ends a run, so it does not move and its
state does not advance, as in torch.optim. A run is cut into pieces by where its
gradients lie (:mod:`.grads`); every piece is one kernel call with the run's numbers.

The engine knows rule chains, param groups (plain dicts with a ``params`` list), the
state mapping and the gradients, and nothing above them: no optimizer class.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, get_num_threads, set_num_threads

from ..rules.base import Chain
from . import formats, native
from .body import nonfinite
from .bucket import Bucket
from .formats import MIN_NUMEL
from .grads import WINDOWS, Call, Grads, calls, collect, items, piece, pieces, prepared, read_in_place, stage
from .kernels import (
    KERNEL_MIN,
    PARALLEL_MIN,
    Kernel,
    compile_mode,
    finite,
    fresh_scalars,
    kernel_for,
    pack,
    run_eager,
    run_stored,
    stats,
    warn,
)
from .layout import flattenable, held, plan, real_dtype
from .state import StateKeeper
from .tracked import TrackedList, version

#: The chain of a param group, built by the optimizer from its rule.
ChainFor = Callable[[Mapping[str, Any]], Chain]


@dataclass
class _Group:
    group: dict
    params: list
    #: the params the buckets were built for, and the list's mutation count then
    snapshot: list
    version: int | None
    buckets: list[Bucket]
    #: params listed more than once (torch.optim warns, and steps them once per listing):
    #: (bucket, index) for each extra listing
    repeats: list[tuple[Bucket, int]]
    #: params stepped in their own storage only because another tensor held it when the
    #: buckets were made (:func:`.layout.held`), and the step at which to look again
    waiting: list = field(default_factory=list)
    retry: int = 0

    def holds(self, group: dict) -> bool:
        """``group`` is the one the buckets were built for, with the same params."""
        params = group["params"]
        if group is not self.group or params is not self.params:
            return False
        if type(params) is TrackedList and params.cell.n == self.version:
            return True  # (the common case, first: a tracked list unchanged since)
        if len(params) != len(self.snapshot):
            return False
        v = version(params)
        if v is not None and v == self.version:
            return True
        if not all(map(operator.is_, params, self.snapshot)):
            return False
        self.version = v  # an edit that put every param back
        return True


#: Elements per call of an 8-bit kernel (see :meth:`Engine._run_stored`): its
#: temporaries then stay in cache. Measured on the quiet 2-core machine, AdamW over the
#: 6.6 M layout: whole runs 40 ms a step, 2²⁰-element calls 30, 2¹⁷ 27, 2¹⁶ 27, 2¹⁵ 52
#: (calls under :data:`PARALLEL_MIN` run on one thread).
SPLIT = 1 << 17


def _blocks_of(bufs: Sequence[Tensor], unit: int, a: int, e: int) -> list[Tensor]:
    """Elements ``a:e`` of 8-bit buffers (codes, then their blocks' scales)."""
    return [v[a // unit : -(-e // unit)] if j % 2 else v[a:e] for j, v in enumerate(bufs)]


def _call(fn, args: list[Tensor], n: int, cpu: bool) -> bool:
    """Run a kernel over ``n`` elements; False when a guarded kernel skipped the step."""
    if n < PARALLEL_MIN and cpu and (threads := get_num_threads()) > 1:
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


_NONE: list = []


def _make(b: Bucket, call: Call, grads: list | None, scal: Tensor, kern: Kernel) -> None:
    """One prepared kernel call: its small gradients staged, the step's numbers and the
    gradients read in place put in their slots. One C++ call where the module opened
    the kernel (``native.call``: about 0.4 µs less than the Python below, timed alone)."""
    handle = kern.handle if kern.pt2 is None else kern.opened()
    if handle is not None and (fast := native.module()) is not None:
        single = call.n < PARALLEL_MIN
        staging = call.views, call.staged, call.gaps
        given = _NONE if grads is None else grads  # (None: every gradient in the flat buffer)
        if fast.call(handle, call.args, call.scal, scal, call.slots, given, b.params, *staging, single):
            stats["compiled_calls"] += 1
            return
    with torch.no_grad():  # (a step that repeats the last one runs in the caller's grad mode)
        stage(call, grads)
        args = call.args.copy()
        args[call.scal] = scal
        fast = native.module()
        if call.slots and (fast is None or not fast.flat(args, call.slots, grads, b.params)):
            for pos, i in call.slots:
                args[pos] = read_in_place(b, i, grads[i])
        _call(kern.fn, args, call.n, b.cpu)


@dataclass
class Run:
    """Params ``a..c-1`` of a bucket, stepped with one set of numbers in ``items`` pieces.
    ``again``: a param listed twice in its group, stepped once more; without a published
    ``step`` (SGD) torch.optim's second listing sees the state as the first one found it,
    so on the first step it is a first step too."""

    a: int
    c: int
    items: list
    again: bool = False


#: :meth:`Engine._calls_of` for a run with a piece the general path steps eagerly
_GENERAL: list = []


def _prepared(b: Bucket, pieces: Sequence, names: Sequence[str]) -> list[Call]:
    """The kernel calls :meth:`Engine._run` makes for ``pieces`` of ``b``, one a piece
    (empty ones skipped), made once to be reused; :data:`_GENERAL` where a piece runs
    eagerly (not 1-D, or too short for a kernel)."""
    out = []
    for item in pieces:
        call = prepared(b, item, names)
        if call.n == 0:
            continue
        if call.args[0].dim() != 1 or call.n < KERNEL_MIN:
            return _GENERAL
        out.append(call)
    return out


def _replayable(b: Bucket) -> bool:
    """Whether ``b``'s steps can be kernel calls made once and reused: a flat bucket of
    real params, state in their dtype, whose params share their step count (``b.t``)."""
    return b.t is not None and b.flat and not b.sharded and b.fmt is None and not b.dtype.is_complex


@dataclass
class _Last:
    """A step that the next one repeats when nothing changed (see :meth:`Engine._again`)."""

    groups: list[dict]
    chains: list[Chain]
    tasks: list[Task]
    #: per task: its gradients lay in its flat gradient buffer (one span)
    spans: list[bool]
    #: per task, per layout of the rule's numbers: its kernel calls, made once
    #: (:meth:`Engine._replay`); None where the general path must run
    calls: list[dict] = field(default_factory=list)


@dataclass
class Task:
    """One bucket's share of a step."""

    group: dict
    chain: Chain
    b: Bucket
    gr: Grads | None
    name: Callable[[Tensor], str]
    runs: list[Run]
    #: inside backward (:meth:`Engine.step_some`): the step count every param of the
    #: bucket had when this step began, where its params step by prepared kernel calls
    #: (None: the general path)
    t: float | None = None
    #: ... and, from its first call on, the step's numbers and kernel
    ready: tuple | None = None


def _repeats(params: list, buckets: list[Bucket]) -> list[tuple[Bucket, int]]:
    if len({id(p) for p in params}) == len(params):
        return []
    where = {id(p): (b, i) for b in buckets for i, p in enumerate(b.params)}
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) in seen:
            out.append(where[id(p)])
        seen.add(id(p))
    return out


def windowed(b: Bucket, gr: Grads | None) -> bool:
    """Whether a run of ``b`` with gradients ``gr`` may be stepped by a windows kernel:
    a flat CPU bucket with state in the params' dtype, every gradient a tensor of its own."""
    return (
        gr is not None
        and gr.grads is not None
        and gr.held is None
        and b.cpu
        and b.flat
        and b.fmt is None
        and not b.sharded
        and not b.tiled
        and not b.dtype.is_complex
    )


def namer(group: dict[str, Any], gi: int) -> Callable[[Tensor], str]:
    def name(p: Tensor) -> str:
        i = next(j for j, q in enumerate(group["params"]) if q is p)
        return f"param {i} of param group {gi} (shape {tuple(p.shape)})"

    return name


class Engine:
    """Runs rule chains over param groups.

    ``chain_for(group)`` gives a group's chain; ``name`` names the optimizer in
    messages; ``state_step`` publishes a per-param ``step`` in the state, as torch.optim
    does for every optimizer but plain SGD. ``state_dtype`` (None, ``"bfloat16"``,
    ``"8bit"``) and ``stochastic_rounding`` (of bfloat16 params) choose how flat buckets
    store state and write params (:mod:`.formats`).
    """

    def __init__(
        self,
        chain_for: ChainFor,
        *,
        name: str = "optimizer",
        state_step: bool = True,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        for key, value in (
            ("flat", flat),
            ("skip_nonfinite", skip_nonfinite),
            ("stochastic_rounding", stochastic_rounding),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"Invalid {key} setting: {value!r} (expected True or False)")
        self.state_dtype = formats.parse_state_dtype(state_dtype)
        self.sr = stochastic_rounding
        if not flat and (self.state_dtype is not None or self.sr):
            what = (
                f"state_dtype={state_dtype!r}" if self.state_dtype is not None else "stochastic_rounding=True"
            )
            raise ValueError(
                f"{what} needs flat=True: compact state and stochastic rounding live in descent's "
                "flat buffers (with flat=False every param keeps its own storage and its state "
                "the param's dtype)"
            )
        self.chain_for = chain_for
        self.name = name
        self.flat = flat
        #: skip (and count) a step whose gradients hold an inf or NaN
        self.guard = skip_nonfinite
        self.skipped = 0
        self.compile = compile_mode(compile)
        self.groups: list[_Group | None] = []
        self.keeper = StateKeeper(state_step)
        #: times another descent optimizer took params out of this one's buffers
        self.retaken = 0
        #: the last step, when the next may repeat it
        self.last: _Last | None = None
        #: windows per call of the kernel that steps fresh gradients (0: one call a piece)
        self.windows = WINDOWS
        #: steps taken (when to look again at params another tensor held, see _movable)
        self.count = 0
        self.warned_held = False

    @property
    def reload(self) -> bool:
        return self.keeper.reload

    @reload.setter
    def reload(self, value: bool) -> None:
        """Set by ``load_state_dict``: every bucket re-reads the state at the next step."""
        self.keeper.reload = value

    def prefetch(self, groups: Sequence[dict]) -> None:
        """Ask now for the kernels the first step will run: a cached one loads (a few ms),
        a missing one starts building while the model runs its first forward pass."""
        if self.compile is False:
            return
        try:
            self._prefetch(groups)
        except Exception:  # only a head start: the first step asks again and reports errors
            return

    def _prefetch(self, groups: Sequence[dict]) -> None:
        for group in groups:
            params = [p for p in group["params"] if self.flat or p.numel() >= KERNEL_MIN]
            if not params:
                continue
            chain = self.chain_for(group)
            statics, names, _ = pack(next(fresh_scalars(chain, group)))
            kinds = {(real_dtype(p.dtype), p.device, self._format(p.numel(), p.dtype)) for p in params}
            for dtype, device, fmt in kinds:
                if device.type != "meta":
                    kernel_for(chain, statics, names, dtype, device, self.guard, fmt).ready(False)

    def _format(self, numel: int, dtype: torch.dtype) -> formats.Format | None:
        """The state format of a flat bucket whose smallest param has ``numel`` elements."""
        if self.state_dtype is None and not self.sr:
            return None
        return formats.for_bucket(self.state_dtype, self.sr, numel, dtype)

    # -- the step ------------------------------------------------------------------------
    def step(self, groups: Sequence[dict], state: dict) -> None:
        """One step of every group, reading and updating ``state`` (``optimizer.state``),
        in any grad mode: a step that repeats the last one (:meth:`_replay`) records
        nothing autograd could see, and the rest runs under ``no_grad``."""
        self.count += 1
        tasks = self._again(groups, state)
        if tasks is not None and self._replay(tasks, state):
            return
        with torch.no_grad():
            self._planned(groups, state, tasks)

    def _planned(self, groups: Sequence[dict], state: dict, tasks: list[Task] | None) -> None:
        """:meth:`step` planned afresh, or (``tasks``: the last step's, with this step's
        gradients collected) run through the general path."""
        if tasks is None:
            self.last = None
            work = self._prologue(groups, state)
            tasks = [task for w in work for task in self._tasks(*w)]
            remember = self._repeatable(tasks)
        else:
            remember = None
        try:
            if not self._run_tasks(tasks, state):
                return
        except BaseException:
            self.last = None  # (the next step plans afresh)
            raise
        finally:
            for task in tasks:  # a remembered task must not keep this step's gradients alive
                task.gr = None
        if remember is not None:
            self.last = remember

    def _run_tasks(self, tasks: list[Task], state: dict) -> bool:
        """Step every task and settle; False when ``skip_nonfinite`` skipped the step."""
        inside = False
        if self.guard:
            # skip_nonfinite: a step of one piece checks its gradient inside its kernel; with
            # several, every gradient is checked (one reduction a piece) before any write.
            spread = any(t.b.sharded for t in tasks)
            # (an 8-bit bucket may make two calls of one item: checked before, too)
            blocks = any(t.b.unit > 1 for t in tasks)
            inside = not spread and not blocks and sum(len(r.items) for t in tasks for r in t.runs) == 1
            if not inside and not self._all_finite(tasks, spread):
                self.skipped += 1
                self.settle(state, tasks)
                return False
        for task in tasks:
            self._step_bucket(task, inside, state)
        self.settle(state, tasks)
        return True

    def _repeatable(self, tasks: list[Task]) -> _Last | None:
        """What the next step may do again if nothing changes: every bucket one whole run,
        stepped with the same chain, its gradients lying the same way."""
        groups = [e.group for e in self.groups if e is not None]
        if len(groups) != len(self.groups) or sum(len(e.buckets) for e in self.groups) != len(tasks):
            return None
        for t in tasks:
            if t.gr is None or t.gr.has is not None or t.gr.held is not None:
                return None
            if len(t.runs) != 1 or t.runs[0].again or (t.runs[0].a, t.runs[0].c) != (0, len(t.b.params)):
                return None
        chains = [next(t.chain for t in tasks if t.group is g) for g in groups]
        spans = [t.b.flat and not t.b.sharded and t.gr.grads is None for t in tasks]
        return _Last(groups, chains, tasks, spans)

    def _again(self, groups: Sequence[dict], state: dict) -> list[Task] | None:
        """The last step's tasks, when nothing a step reads has changed since: no edit of
        ``state``, the same groups holding the same params with the same chains, every
        param where its bucket put it, every gradient present and lying as then. Each
        bucket's gradients are collected (and checked) as in any step. None otherwise,
        and the step is planned afresh."""
        last = self.last
        keeper = self.keeper
        if last is None or keeper.reload or keeper.edited(state) or len(groups) != len(last.groups):
            return None
        chain_for = self.chain_for
        for group, mine, chain, entry in zip(groups, last.groups, last.chains, self.groups):
            if group is not mine or not entry.holds(group) or chain_for(group) is not chain:
                return None
            if entry.waiting and self._movable(entry):
                return None
        tasks = last.tasks
        fast = native.module()
        for t, span in zip(tasks, last.spans):
            b = t.b
            if not b.uniform:
                return None
            if fast is not None and not span and b.flat and not b.sharded and b.G is None:
                # fresh gradients: the checks below and the gradients in one C++ call
                seen = b.host_list, b.host_seen
                grads = fast.again(b.params, b.ptrs, *seen, b.dtype, b.device_index, b.shapes)
                if grads is not None:
                    t.gr = Grads(None, grads)
                    continue
            if not b.intact() or b.retiled() or b.host_edited():
                return None
            gr = self._collect(b, t.name)
            if gr is None or gr.has is not None or gr.held is not None or (gr.grads is None) != span:
                return None
            t.gr = gr  # (the step that plans afresh drops it: self.last is None then)
        return tasks

    def _replay(self, tasks: list[Task], state: dict) -> bool:
        """The repeated step (:meth:`_again`) as the calls the last one made, kept ready:
        what :meth:`_run` does for a whole bucket, without planning it again (a small
        model's step is mostly that planning). False, with nothing written, where the
        general path must run (a kernel still building, a guarded step, 8-bit state, a
        piece stepped eagerly); its gradients stay collected for it. A new layout of the
        rule's numbers (RAdam's rectification switching on) gets its calls made then."""
        last = self.last
        if self.guard or last is None:
            return False
        if not last.calls:
            last.calls = [{} for _ in tasks]
        ready = []
        for task, made in zip(tasks, last.calls):
            b, chain = task.b, task.chain
            if not _replayable(b):
                return False
            t = b.t + 1
            values = b.host_values(chain, task.group, t)  # (written below, once every call is ready)
            statics, names, numbers = pack(chain.scalars(task.group, t, values))
            key = (statics, names, self.windows)
            plan = made.get(key)
            if plan is None:
                with torch.no_grad():
                    plan = self._calls_of(task, statics, names)
                if plan is not None:  # (None: a kernel still building, asked again next step)
                    if len(made) >= 8:  # (a rule whose flags keep changing)
                        made.clear()
                    made[key] = plan
            ready.append((values, numbers, plan))
            if plan is None or plan is _GENERAL:
                return False
        for task, (values, numbers, plan) in zip(tasks, ready):
            b = task.b
            b.write_host(values, 0, len(b.params))
            b.t = values["step"]
            scal = b.numbers.again(numbers) if b.cpu else None
            if scal is None:
                scal = b.numbers.fill(numbers, b.P)
            grads = task.gr.grads
            for kern, call in plan:
                _make(b, call, grads, scal, kern)
        # (nothing else to settle: the state holds what it held, the step counts were
        # written as descent's own)
        for task in tasks:
            task.gr = None
        return True

    def _calls_of(self, task: Task, statics: tuple, names: tuple) -> list | None:
        """The kernel calls :meth:`_run` makes for ``task``'s whole run, as
        ``(kernel, Call)``: :data:`_GENERAL` where a piece runs eagerly, None while a
        kernel is not built yet (the general path runs, and this is asked again)."""
        b, chain, run, gr = task.b, task.chain, task.runs[0], task.gr
        if self.windows and len(run.items) > 1 and windowed(b, gr):
            wk = self._kernel(b, chain, statics, names, False, b.P, self.windows)
            if wk is None or not wk.ready(False):
                return None
            return [(wk, c) for c in calls(b, run.a, run.c, wk.spec.windows, chain.state)]
        kern = self._kernel(b, chain, statics, names, False, b.P)
        if kern is None or not kern.ready(False):
            return None
        made = _prepared(b, run.items, chain.state)
        return made if made is _GENERAL else [(kern, call) for call in made]

    def _prologue(self, groups: Sequence[dict], state: dict) -> list[tuple]:
        """Buckets for every group (laid out anew where the groups changed) and the user's
        edits of ``state`` taken over: everything a step does before reading gradients."""
        keeper = self.keeper
        edited = keeper.edited(state)
        work = []
        for gi, group in enumerate(groups):
            chain = self.chain_for(group)
            work.append((group, chain, self._entry(gi, group, chain, state), namer(group, gi)))
        if edited:
            keeper.absorb(state, [(g, c, e.buckets) for g, c, e, _ in work])
        keeper.reload = False
        for *_, entry, _ in work:
            for b in entry.buckets:
                if b.host_edited():  # a step edited in place: runs and cached counts are stale
                    b.uniform, b.t = False, None
        return work

    def settle(self, state: dict, tasks: Sequence[Task]) -> None:
        """After a step: what it left, so the next one notices only the user's edits."""
        self.keeper.settle(state, [t.b for t in tasks])

    # -- the step in pieces, as gradients arrive (step inside backward) ------------------
    def prepare(self, groups: Sequence[dict], state: dict) -> list[Task]:
        """The prologue of a step whose gradients arrive one by one: a task per bucket,
        to be stepped with :meth:`step_some`."""
        self.last = None
        self.count += 1
        tasks = [
            Task(group, chain, b, None, name, [])
            for group, chain, entry, name in self._prologue(groups, state)
            for b in entry.buckets
        ]
        for task in tasks:
            b = task.b
            if b.uniform and _replayable(b) and 0 not in b.exposed:
                task.t = b.t
        return tasks

    def step_some(self, task: Task, indices: Sequence[int], gr: Grads, state: dict) -> None:
        """Step params ``indices`` (ascending) of ``task``'s bucket with gradients ``gr``."""
        if task.t is not None and self._some_again(task, indices, gr):
            return
        b = task.b
        task = Task(task.group, task.chain, b, gr, task.name, [])
        keys = [tuple(b.host[k][i].item() for k in task.chain.host) for i in indices]
        start = 0
        for j in range(1, len(indices) + 1):
            if j == len(indices) or indices[j] != indices[j - 1] + 1 or keys[j] != keys[start]:
                a, c = indices[start], indices[j - 1] + 1
                task.runs.append(Run(a, c, self._items(b, a, c, gr)))
                start = j
        self._step_bucket(task, False, state)

    def _some_again(self, task: Task, indices: Sequence[int], gr: Grads) -> bool:
        """:meth:`step_some` as kernel calls prepared once per set of params, where every
        param of the bucket began the step at one count (``task.t``): the numbers are
        the same for every call of the step, made at its first, and the counts (and the
        rule's host scalars) written as descent's own (:meth:`.Bucket.write_host_at`).
        False, with nothing written, where the general path must step these params (a
        kernel still building, a piece stepped eagerly); the rest of this step then goes
        that way too."""
        b, chain = task.b, task.chain
        made = task.ready
        if made is None:
            values = b.host_values(chain, task.group, task.t + 1)
            statics, names, numbers = pack(chain.scalars(task.group, values["step"], values))
            kern = self._kernel(b, chain, statics, names, False, b.P)
            if kern is None or not kern.ready(False):
                task.t = None
                return False
            made = task.ready = (values, b.numbers.fill(numbers, b.P), kern)
        values, scal, kern = made
        key = ("some", tuple(indices), chain.state)
        plan = b.plans.get(key)
        if plan is None:
            plan = b.plans[key] = self._some_calls(b, indices, gr, chain.state)
        if plan is _GENERAL:
            task.t = None
            return False
        grads = gr.grads
        for call in plan:
            _make(b, call, grads, scal, kern)
        b.write_host_at(values, indices)
        return True

    @staticmethod
    def _some_calls(b: Bucket, indices: Sequence[int], gr: Grads, names: Sequence[str]) -> list[Call]:
        """The calls :meth:`_run` makes for params ``indices``: the pieces of each range
        of consecutive ones; :data:`_GENERAL` where a piece runs eagerly."""
        pieces = []
        start = 0
        for j in range(1, len(indices) + 1):
            if j < len(indices) and indices[j] == indices[j - 1] + 1:
                continue
            pieces += items(b, indices[start], indices[j - 1] + 1, gr)
            start = j
        return _prepared(b, pieces, names)

    def settle_some(self, state: dict, tasks: Sequence[Task]) -> None:
        """:meth:`settle` after a step made with :meth:`step_some`: whether each bucket's
        params now share their host scalars (a param without a gradient did not
        advance), for the next step."""
        for task in tasks:
            b = task.b
            if not b.params or b.sharded or not b.flat:
                continue
            columns = [b.host[k].tolist() for k in task.chain.host]
            b.uniform = all(c.count(c[0]) == len(c) for c in columns)
            b.t = columns[0][0] if b.uniform else None  # (a chain's first host scalar is its step)
        self.settle(state, tasks)

    def _tasks(self, group: dict, chain: Chain, entry: _Group, name) -> list[Task]:
        # every bucket's gradients collected (and checked) before anything is written
        grads = [self._collect(b, name) for b in entry.buckets]
        out = []
        for b, gr in zip(entry.buckets, grads):
            runs = b.runs(gr.has if gr is not None else None, chain.host)
            pieces = [Run(a, c, self._items(b, a, c, gr)) for a, c in runs]
            out.append(Task(group, chain, b, gr, name, pieces))
        for b, i in entry.repeats:  # once more for each extra listing, after the first pass
            gr = grads[entry.buckets.index(b)]
            if gr is None or gr.has is None or gr.has[i]:
                again = Run(i, i + 1, self._items(b, i, i + 1, gr), again=True)
                out.append(Task(group, chain, b, gr, name, [again]))
        return out

    def _collect(self, b: Bucket, name: Callable[[Tensor], str]) -> Grads | None:
        if b.sharded:
            grads = [p.grad for p in b.params]
            has = [g is not None for g in grads]
            return Grads(None if all(has) else has, grads)
        return collect(b, self.name, name)

    def _items(self, b: Bucket, a: int, c: int, gr: Grads | None) -> list:
        if b.sharded:
            return [("shards", a, c)]
        if not b.flat:
            return [("single",)]
        return items(b, a, c, gr)

    def _pieces(self, task: Task, run: Run, names: Sequence[str]):
        """The 1-D tensors of each piece, made one at a time (staged gradients share a
        buffer, so a piece is made just before its kernel runs)."""
        b = task.b
        for item in run.items:
            kind = item[0]
            if kind == "shards":
                yield from b.shards(item[1], item[2], names)
            elif kind == "single":
                yield b.single(names, task.gr.grads[0])
            elif b.unit == 1:
                yield piece(b, item, names, task.gr)
            else:
                yield from pieces(b, item, names, task.gr)

    def _step_bucket(self, task: Task, guard: bool, state: dict) -> None:
        b = task.b
        step = self._guarded_run if guard else self._run
        for run in task.runs:
            if not step(task, run):
                self.skipped += 1
                return
        runs = task.runs
        b.uniform = len(runs) == 1 and runs[0].a == 0 and runs[0].c == len(b.params)
        if 0 in b.exposed:  # new entries of optimizer.state, in the group's order
            new = [i for r in task.runs for i in range(r.a, r.c) if not b.exposed[i]]
            for i in sorted(new, key=b.rank.__getitem__):
                self.keeper.expose(state, b, task.chain, i)

    def _all_finite(self, tasks: list[Task], spread: bool) -> bool:
        """Every gradient of the step is finite: one flag per piece kept on the device, one
        host read for the whole step."""
        # each flag as its piece is made: staged pieces share one buffer
        flags = [
            nonfinite(g) for t in tasks for r in t.runs for _, g, _ in self._pieces(t, r, ()) if g.numel()
        ]
        device = tasks[0].b.device
        bad = torch.stack([f.to(device) for f in flags]).any() if flags else torch.zeros((), dtype=torch.bool)
        if spread:  # sharded params: every rank must take the same decision
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                flag = bad.to(device=device, dtype=torch.float32).reshape(1)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                bad = flag[0] > 0
        return not bool(bad)

    def _guarded_run(self, task: Task, run: Run) -> bool:
        """:meth:`_run` that leaves params, state and step counts as they were when the
        gradient holds an inf or NaN; False when it did."""
        b = task.b
        saved = [t.clone() for t in b.host.values()], b.t
        if self._run(task, run, guard=True):
            return True
        for t, old in zip(b.host.values(), saved[0]):
            t.copy_(old)
        b.t = saved[1]
        return False

    def _run(self, task: Task, run: Run, guard: bool = False) -> bool:
        """The kernel calls (or eager passes) over one run. With ``guard`` (a run of one
        piece) it writes nothing when the gradient is not finite, and returns False then."""
        b, chain, group = task.b, task.chain, task.group
        whole = run.a == 0 and run.c == len(b.params)
        steps = b.host["step"] if whole else b.host["step"][run.a : run.c]
        # A run's params share their host scalars: after a whole-bucket run the bucket
        # keeps its step as a number (fill_ costs a third of += on a host tensor).
        if run.again and not self.keeper.state_step:
            t = steps[0].item()
        elif whole and b.t is not None:
            t = b.t + 1
            steps.fill_(t)
        else:
            steps += 1
            t = steps[0].item()
        b.t = t if whole else None
        values = b.host_values(chain, group, t, run.a)
        if len(values) > 1:
            b.write_host({k: values[k] for k in chain.host[1:]}, run.a, run.c)
        statics, names, numbers = pack(chain.scalars(group, t, values))
        if b.fmt is not None:
            return self._run_stored(task, run, guard, t, statics, names, numbers)
        if self.windows and not guard and len(run.items) > 1 and windowed(b, task.gr):
            wk = self._kernel(b, chain, statics, names, False, b.P, self.windows)
            if wk is not None and wk.ready(False):  # (until it is built: the pieces below)
                return self._run_windows(task, run, wk, numbers)
        scal = kern = None
        for p, g, bufs in self._pieces(task, run, chain.state):
            n = p.numel()
            if n == 0:
                continue
            if scal is None:  # the pieces share dtype and device: one lookup per run
                scal = b.numbers.fill(numbers, p)
                kern = self._kernel(b, chain, statics, names, guard, p)
            wait = True if self.compile is True else None
            if kern is not None and p.dim() == 1 and n >= KERNEL_MIN and kern.ready(wait):
                if not _call(kern.fn, [p, g, scal, *bufs], n, b.cpu):
                    return False
                continue
            if guard and not finite(g):
                return False
            run_eager(chain, statics, names, scal, p, g, bufs)
        return True

    def _kernel(self, b: Bucket, chain: Chain, statics, names, guard: bool, p: Tensor, windows: int = 0):
        """The bucket's kernel for these numbers' layout (None when not compiling), found
        without hashing the chain's key after the first step."""
        if self.compile is False:
            return None
        kern = b.kernels.get((chain, statics, names, guard, windows))
        if kern is None:
            kern = kernel_for(chain, statics, names, p.dtype, p.device, guard, b.fmt, windows)
            b.kernels[(chain, statics, names, guard, windows)] = kern
        return kern

    def _run_windows(self, task: Task, run: Run, kern, numbers: list) -> bool:
        """A run of fresh gradients in calls of a windows kernel (:func:`.grads.calls`):
        the small gradients of each call staged, the others read where they lie."""
        b = task.b
        grads = task.gr.grads
        scal = b.numbers.fill(numbers, b.P)
        for call in calls(b, run.a, run.c, kern.spec.windows, task.chain.state):
            _make(b, call, grads, scal, kern)
        return True

    def _run_stored(self, task: Task, run: Run, guard: bool, t: float, statics, names, numbers) -> bool:
        """:meth:`_run`'s kernel calls for a bucket whose state is kept in a format: each
        call gets the step's noise key and its first element's position in the bucket,
        and returns the new 8-bit block scales, written back here."""
        b, chain = task.b, task.chain
        fmt = b.fmt
        assert fmt is not None
        seed = formats.step_key(b.seed, int(t), 0)
        scal = kern = None
        least = max(KERNEL_MIN, b.unit)
        for p, g, bufs, pos, back in self._stored_pieces(task, run, chain.state):
            n = p.numel()
            if n == 0:
                continue
            if scal is None:
                scal = b.numbers.fill(numbers, p)
                kern = self._kernel(b, chain, statics, names, guard, p)
            key = (seed, pos)
            wait = True if self.compile is True else None
            if kern is not None and n >= least and kern.ready(wait):
                # 8-bit kernels keep a block's new values in temporaries between their
                # passes: calls of SPLIT elements keep those in cache (and their memory
                # reused), where a whole 51 M-element run would page-fault fresh ones
                step = n if b.unit == 1 else SPLIT
                for a in range(0, n, step):
                    e = min(a + step, n)
                    part = [p[a:e], g[a:e], *_blocks_of(bufs, b.unit, a, e)] if step < n else [p, g, *bufs]
                    if b.unit > 1:  # an 8-bit kernel takes p and g as rows of a block
                        part[0], part[1] = part[0].view(-1, b.unit), part[1].view(-1, b.unit)
                    k = torch.tensor((key[0], formats.i32(key[1] + a)), dtype=torch.int32, device=p.device)
                    if not _call(kern.fn, [*part[:2], scal, *part[2:], k], e - a, b.cpu):
                        return False
            else:
                if guard and not finite(g):
                    return False
                run_stored(chain, fmt, statics, names, scal, p, g, bufs, key)
            if back is not None:  # a shard's last partial block, stepped on a padded copy
                back[0].copy_(back[1])
        return True

    def _stored_pieces(self, task: Task, run: Run, names: Sequence[str]):
        """:meth:`_pieces` of a bucket whose state is kept in a format, each with its first
        element's position (what stochastic rounding hashes) and what to write back."""
        b = task.b
        if b.sharded:
            yield from b.stored_shards(run.a, run.c, names)
            return
        origin = b.P.storage_offset()
        for p, g, bufs in self._pieces(task, run, names):
            yield p, g, bufs, p.storage_offset() - origin, None

    # -- buckets -------------------------------------------------------------------------
    def _entry(self, gi: int, group: dict, chain: Chain, state: dict) -> _Group:
        while len(self.groups) <= gi:
            self.groups.append(None)
        entry = self.groups[gi]
        params = group["params"]
        fresh = (
            entry is None
            or not entry.holds(group)
            or not all(b.intact() for b in entry.buckets)
            or any(b.retiled() for b in entry.buckets)
            or (entry.waiting and self._movable(entry))
        )
        if fresh:
            if entry is not None and any(b.taken() for b in entry.buckets):
                self._taken()
            unique = list({id(p): p for p in params}.values())
            buckets = self._buckets(unique, gi)
            entry = _Group(group, params, list(params), version(params), buckets, _repeats(params, buckets))
            entry.waiting = [p for b in buckets if not b.flat and not b.sharded for p in b.params if held(p)]
            entry.retry = 2 * self.count
            if entry.waiting:
                self._held(entry.waiting)
            self.groups[gi] = entry
        for b in entry.buckets:
            grown = self.keeper.prepare(b, chain, group)
            if fresh or self.keeper.reload or (grown and 1 in b.exposed):
                self.keeper.adopt(state, b, chain, group, fresh=fresh)
        return entry

    def _movable(self, entry: _Group) -> bool:
        """Whether a param another tensor held when ``entry``'s buckets were made can move
        into a flat buffer now (the buckets are then made again, the state carried over
        and, with ``state_dtype``, compacted). Looked at on steps 2, 4, 8, …: a param
        held for good (an alias the user keeps) costs next to nothing."""
        if self.count < entry.retry:
            return False
        if any(map(flattenable, entry.waiting)):
            return True
        entry.retry = 2 * self.count
        return False

    def _held(self, params: list) -> None:
        """Say once that compact state waits for params another tensor holds."""
        if self.warned_held or (self.state_dtype is None and not self.sr):
            return
        big = [p for p in params if p.numel() >= MIN_NUMEL and p.is_floating_point()]
        if not big:
            return
        self.warned_held = True
        warn(
            f"descent: {len(big)} param(s) of this {self.name} (the largest of shape "
            f"{tuple(max(big, key=Tensor.numel).shape)}) keep full-precision state and are stepped "
            "in their own storage: another tensor holds their memory (a model state_dict(), a .data "
            "alias). They move into descent's flat buffers, and their state into the format asked "
            "for, at a later step once nothing else holds them."
        )

    def _buckets(self, params: list, gi: int) -> list[Bucket]:
        # A bucket's stochastic-rounding seed is where it lies (group, place in the plan),
        # not when it was made: an optimizer that rebuilds its buckets (a checkpoint
        # loaded, a param added) draws the same bits as one that never did.
        out = []
        for k, (ps, flat, tiled, sh) in enumerate(plan(params, self.flat, self.state_dtype)):
            fmt = None
            if flat or sh:
                fmt = self._format(min(p.numel() for p in ps), ps[0].dtype)
            out.append(Bucket(ps, flat, tiled, sh, fmt=fmt, seed=1 + (gi << 12) + k))
        return out

    def _taken(self) -> None:
        """Another descent optimizer re-homed this one's params; moving them back is a
        full copy, harmless once (a rebuilt optimizer) but costly on every step."""
        self.retaken += 1
        if self.retaken == 3:
            warn(
                f"descent: another optimizer keeps taking this {self.name}'s params "
                "into its own flat buffer, so each step moves them back (a full copy; the numbers "
                "stay right). Step the params with one optimizer, or pass flat=False to one of them."
            )

    # -- gradients -----------------------------------------------------------------------
    def hold_grads(self, groups: Sequence[dict]) -> bool:
        """``zero_grad(set_to_none=False)``: zero every flat bucket's gradients as one
        buffer (backward then accumulates into it and the step reads it in one pass);
        True when that covered every param, so nothing is left to zero one by one."""
        entries = [e for e in self.groups if e]
        buckets = [b for e in entries for b in e.buckets]
        if not buckets or not all(b.flat for b in buckets):
            return False
        if len(entries) != len(groups) or any(e.group is not g for e, g in zip(entries, groups)):
            return False
        for b in buckets:
            if b.tiled:
                if not b.grads_in_place():
                    return False
            elif not b.intact():
                return False
        for b in buckets:
            if b.tiled:  # the shared buffer may hold other params' gradients too
                torch._foreach_zero_(b.gviews)
            else:
                b.hold_grads()
        return True
