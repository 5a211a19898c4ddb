"""One run: a task, a data regime, an optimizer with its settings, and a seed.

A run is a pure function of its :class:`RunSpec` (one CPU thread, the seed fixes the
initialisation and the batch order), so the results do not depend on which worker ran
it or when. Wall time is the only measured quantity that does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ... import catalog
from ..records import Curve, Final, Run, finite, jsonable
from ..tasks import Task, resolve
from ..tasks.data import DATA_SEED, batch_size_for, make_loader

#: Evaluations per run (plus the initial one): the resolution of curves and of
#: steps-to-target.
EVALS = 16
#: Training loss is measured on a fixed subset of this many training examples.
TRAIN_EVAL_MAX = 512
#: A run whose loss exceeds this multiple of its initial validation loss has diverged.
DIVERGED_FACTOR = 1e3


@dataclass(frozen=True)
class RunSpec:
    task: str | Task
    regime: str
    optimizer: str
    lr: float | None = None
    hyper: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    phase: str = "defaults"
    id: str = ""
    #: training steps (None: the task's budget for the regime)
    steps: int | None = None


_TASKS: dict[str, Task] = {}
_EVAL_SETS: dict[tuple[str, str], tuple[Any, Any]] = {}


def task_of(ref: str | Task) -> Task:
    """The task for a spec, built once per process."""
    if isinstance(ref, Task):
        return ref
    if ref not in _TASKS:
        _TASKS[ref] = resolve(ref)
    return _TASKS[ref]


def init_worker() -> None:
    """Worker process setup: one thread each (two workers on two cores). Steps use the
    cached kernels; a missing one builds in the background while steps run eagerly with
    the same bits, so results never depend on which."""
    torch.set_num_threads(1)


def _materialize(ds: Dataset, limit: int | None = None) -> tuple[Any, Any]:
    n = len(ds)  # type: ignore[arg-type]
    idx = None
    if limit is not None and n > limit:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(DATA_SEED))[:limit].sort().values
    if isinstance(ds, TensorDataset):
        x, y = ds.tensors[0], ds.tensors[1]
        return (x, y) if idx is None else (x[idx], y[idx])
    if idx is not None:
        ds = torch.utils.data.Subset(ds, idx.tolist())
    return next(iter(DataLoader(ds, batch_size=len(ds))))  # type: ignore[arg-type]


def _eval_sets(task: Task, train: Dataset, val: Dataset) -> dict[str, tuple[Any, Any]]:
    name = task.ref or task.name
    for split, ds, limit in (("train", train, TRAIN_EVAL_MAX), ("val", val, None)):
        if (name, split) not in _EVAL_SETS:
            _EVAL_SETS[(name, split)] = _materialize(ds, limit)
    return {"train": _EVAL_SETS[(name, "train")], "val": _EVAL_SETS[(name, "val")]}


@torch.no_grad()
def _evaluate(
    task: Task, model: torch.nn.Module, sets: dict[str, tuple[Any, Any]], opt: Any = None
) -> dict[str, float]:
    model.eval()
    catalog.set_mode(opt, False)  # Schedule-Free: evaluate at x, the average
    out: dict[str, float] = {}
    for split, (x, y) in sets.items():
        pred = model(x)
        loss = float(task.loss(pred, y))
        out[f"{split}_loss"] = loss
        out[f"{split}_metric"] = float(task.metric(pred, y)) if math.isfinite(loss) else math.nan
    catalog.set_mode(opt, True)
    model.train()
    return out


def eval_steps(steps: int) -> list[int]:
    n = min(EVALS, steps)
    return sorted({round(i * steps / n) for i in range(n + 1)})


def _batches(loader: DataLoader):
    while True:
        yield from loader


def train(spec: RunSpec) -> Run:
    """Train once and return the run's record (settings, final metrics, curve, timing)."""
    task = task_of(spec.task)
    train_ds, val_ds = task.data()
    sets = _eval_sets(task, train_ds, val_ds)
    steps = spec.steps or task.steps_for(spec.regime)
    batch = batch_size_for(spec.regime, len(train_ds), task.batch_size)  # type: ignore[arg-type]
    torch.manual_seed(spec.seed)
    model = task.model()
    entry = catalog.get(spec.optimizer)
    opt = entry.make(model if entry.model else model.parameters(), lr=spec.lr, **spec.hyper)
    catalog.set_mode(opt, True)
    batches = _batches(make_loader(train_ds, spec.regime, batch, seed=spec.seed))
    curve: dict[str, list] = {"step": [], "train_loss": [], "val_loss": [], "val_metric": []}
    state = {"diverged": False, "steps_to_target": None, "time_to_target": None, "train_time": 0.0}
    done = 0
    for at in eval_steps(steps):
        done = _advance(task, model, opt, batches, done, at, state)
        ev = _evaluate(task, model, sets, opt)
        _record(curve, at, ev)
        if not math.isfinite(ev["val_loss"]) or ev["val_loss"] > DIVERGED_FACTOR * curve["val_loss"][0]:
            state["diverged"] = True
        if state["diverged"]:
            break
        if state["steps_to_target"] is None and task.reached(ev["val_metric"]):
            state["steps_to_target"], state["time_to_target"] = at, state["train_time"]
    final = None if state["diverged"] else ev
    return _result(task, spec, steps, batch, len(train_ds), final, curve, state)  # type: ignore[arg-type]


def _advance(task: Task, model, opt, batches, done: int, until: int, state: dict) -> int:
    start = time.perf_counter()
    try:
        while done < until:
            x, y = next(batches)
            opt.zero_grad()
            loss = task.loss(model(x), y)
            loss.backward()
            opt.step()
            done += 1
            if not math.isfinite(loss.item()):
                state["diverged"] = True
                break
    finally:
        state["train_time"] += time.perf_counter() - start
    return done


def _record(curve: dict[str, list], step: int, ev: dict[str, float]) -> None:
    curve["step"].append(step)
    for k in ("train_loss", "val_loss", "val_metric"):
        curve[k].append(_num(ev[k]))


def _num(x: float) -> float | None:
    """A measured number as recorded: 6 significant digits; None where it is not finite
    (a diverged run)."""
    return finite(float(f"{float(x):.6g}"))


def _result(task, spec, steps, batch, n_train, final, curve, state) -> Run:
    # the settings it was built with: the ones given, the entry's defaults for the rest
    entry = catalog.get(spec.optimizer)
    lr = spec.lr if spec.lr is not None else entry.default_lr
    hyper = dict(spec.hyper)
    if entry.knob is not None:
        hyper.setdefault(entry.knob[0], entry.default(entry.knob[0]))
    return Run(
        id=spec.id,
        task=task.name,
        regime=spec.regime,  # type: ignore[arg-type]
        optimizer=spec.optimizer,
        phase=spec.phase,  # type: ignore[arg-type]
        seed=spec.seed,
        lr=float(lr),
        hyper=jsonable(hyper),
        steps=steps,
        batch_size=batch,
        epochs=round(steps * batch / n_train, 3),
        diverged=bool(state["diverged"]),
        final=Final(**{k: _num(final[k]) for k in sorted(final)}) if final else None,
        steps_to_target=state["steps_to_target"],
        time_to_target=_num(state["time_to_target"]) if state["time_to_target"] is not None else None,
        train_time=_num(state["train_time"]),
        curve=Curve(**curve),
    )
