"""One arena session, start to finish, stage by stage: check the inputs and lay out the
studies (``tasks``), run them (``measure``), turn the runs into records and a
recommendation (``analysis``, :class:`~descent.arena.records.Results`), write
``results.json``, then draw the figures and ``index.html`` from those results alone
(``present``), and only then publish them. :func:`redraw` repeats the last step from a
saved ``results.json``.

Everything is written to a staging folder next to ``out`` and moved into ``out`` at
the very end, so a failed or interrupted session leaves no report behind that looks
like it succeeded (and leaves an earlier report in ``out`` untouched).
"""

from __future__ import annotations

import os
import pickle
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import catalog
from .._version import __version__
from .analysis import metrics
from .analysis.recommend import recommend
from .measure import protocol, runner
from .measure.train import EVALS, TRAIN_EVAL_MAX
from .present import figures, gallery, report
from .records import (
    SCHEMA_ID,
    KnobValues,
    OptimizerInfo,
    RegimeInfo,
    Results,
    Run,
    Settings,
    TaskInfo,
    Timing,
    jsonable,
)
from .tasks import Task, TaskError, builtin_names, check, resolve
from .tasks.data import REGIMES, batch_size_for


@dataclass(frozen=True)
class Mode:
    tasks: tuple[str, ...]
    regimes: tuple[str, ...]
    budget: int
    seeds: int
    step_scale: float


QUICK = Mode(("digits_mlp", "cancer_logreg", "sparse_logreg"), ("full", "minibatch"), 4, 2, 0.4)
DEFAULT = Mode(builtin_names(), REGIMES, 7, 3, 1.0)
#: What a session writes in ``out`` (and replaces there); :func:`redraw` the first two.
OUTPUTS = ("index.html", "figures", "results.json", "landscapes")


def run(
    tasks: Sequence[str | Task] | str | None = None,
    optimizers: Sequence[str] | str | None = None,
    out: str | os.PathLike = "arena-out",
    *,
    quick: bool = False,
    budget: int | None = None,
    seeds: int | None = None,
    workers: int = 2,
    landscapes: bool = True,
    progress: Callable[[int, int, Run | str | None], None] | None = None,
) -> Results:
    """Run the arena and write ``index.html``, ``results.json`` and ``figures/`` in ``out``.

    ``tasks``: built-in names, ``"package.module:factory"`` paths or :class:`Task`
    objects (default: all built-in tasks; ``quick``: three). ``optimizers``: catalog
    keys (default: the notes' set plus AdamW). ``budget``: tuning trials per optimizer
    per problem; ``seeds``: seeds for the defaults and the tuned setting. ``progress``
    is called as ``progress(done, total, item)``: ``item`` is a finished :class:`Run`,
    ``None`` at the start, or the stage after training (a string). Returns the
    :class:`Results` as written to ``results.json``. Raises ``ValueError``
    (``TaskError``) on bad input before any training starts.
    """
    started = time.perf_counter()
    plan = _prepare(tasks, optimizers, out, quick, budget, seeds, workers)
    with _staging(plan.out) as staging:
        res = _session(plan, staging, landscapes, progress, started)
        _publish(staging, plan.out, OUTPUTS)
    return res


def redraw(results: str | os.PathLike, out: str | os.PathLike | None = None, workers: int = 2) -> Results:
    """Redraw ``figures/`` and ``index.html`` from a saved ``results.json``, in ``out``
    (default: the folder the file is in), with nothing retrained: the same results give
    the same report. Into another folder, ``results.json`` and the landscape pictures
    are copied along. ``ValueError`` names a missing or malformed file."""
    source = Path(results)
    if source.is_dir():
        source = source / "results.json"
    res = Results.from_json(source)
    out = source.parent if out is None else Path(out)
    _check_numbers(1, 1, workers)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    names: tuple[str, ...] = OUTPUTS[:2]
    with _staging(out) as staging:
        if out.resolve() != source.parent.resolve():
            shutil.copyfile(source, staging / "results.json")
            names = OUTPUTS[:3]
            if res.landscapes and (source.parent / "landscapes").is_dir():
                shutil.copytree(source.parent / "landscapes", staging / "landscapes")
                names = OUTPUTS
        pool = runner.executor(workers)
        try:
            figs = _figures(pool, res, staging)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        report.render(res, figs, staging)
        _publish(staging, out, names)
    return res


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to assemble a report in; removed afterwards."""
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class _Plan:
    out: Path
    entries: list[catalog.Entry]
    infos: list[TaskInfo]
    studies: list[protocol.Study]
    settings: Settings


def _prepare(tasks, optimizers, out, quick, budget, seeds, workers) -> _Plan:
    """Check every input and lay out the studies; raises before anything is written."""
    mode = QUICK if quick else DEFAULT
    budget = mode.budget if budget is None else budget
    seeds = mode.seeds if seeds is None else seeds
    _check_numbers(budget, seeds, workers)
    entries = catalog.select(optimizers, default=catalog.ARENA)
    chosen = _tasks(tasks, mode)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    infos = [_info(task, facts, regimes, mode.step_scale) for task, facts, regimes in chosen]
    refs, workers = _refs([t for t, _, _ in chosen], workers)
    specs = [
        (ref, i.name, tuple(i.regimes), {r: v.steps for r, v in i.regimes.items()})
        for ref, i in zip(refs, infos)
    ]
    settings = Settings(
        quick=quick,
        tasks=[i.name for i in infos],
        optimizers=[e.key for e in entries],
        budget=budget,
        seeds=seeds,
        workers=workers,
        step_scale=mode.step_scale,
        rules=_rules(budget, seeds),
    )
    return _Plan(out, entries, infos, protocol.plan(specs, entries, budget, seeds), settings)


def _check_numbers(budget: int, seeds: int, workers: int) -> None:
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"Invalid budget {budget!r}: the tuning budget is a number of trials, at least 1")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"Invalid seeds {seeds!r}: need at least 1 seed")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"Invalid workers {workers!r}: 0 (in-process) or more")


def _tasks(tasks: Sequence[str | Task] | str | None, mode: Mode) -> list[tuple[Task, dict, tuple[str, ...]]]:
    if tasks is None:
        tasks = list(mode.tasks)
    elif isinstance(tasks, str | Task):
        tasks = [t for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else [tasks]
    if not tasks:
        raise TaskError("no task selected")
    for spec in tasks:  # names first: a typo fails before any task loads its data
        if isinstance(spec, str) and ":" not in spec and spec.strip() not in builtin_names():
            resolve(spec)
    out, names = [], set()
    for spec in tasks:
        task = resolve(spec)
        if task.name in names:
            raise TaskError(f"Task {task.name!r} is selected twice")
        names.add(task.name)
        regimes = tuple(r for r in task.regimes if r in mode.regimes) or task.regimes[:1]
        out.append((task, check(task), regimes))
    return out


def _info(task: Task, facts: dict[str, Any], regimes: tuple[str, ...], scale: float) -> TaskInfo:
    by_regime = {}
    for r in regimes:
        steps = max(1, round(task.steps_for(r) * scale))
        batch = batch_size_for(r, facts["n_train"], task.batch_size)
        by_regime[r] = RegimeInfo(steps, batch, round(steps * batch / facts["n_train"], 3))
    return TaskInfo(
        name=task.name,
        title=task.title,
        description=task.description,
        metric_name=task.metric_name,
        higher_is_better=task.higher_is_better,
        target=task.target,
        chance=task.chance,
        tags=list(task.tags),
        **facts,
        regimes=by_regime,
    )


def _refs(tasks: list[Task], workers: int) -> tuple[list[Any], int]:
    """What each worker is told to rebuild: the task's name/path, or the Task itself.
    A Task that does not pickle (a lambda inside) can only run in this process."""
    refs: list[Any] = []
    for task in tasks:
        if task.ref:
            refs.append(task.ref)
            continue
        try:
            pickle.dumps(task)
        except Exception:  # noqa: BLE001 - any pickling failure means: run here
            if workers:
                warnings.warn(
                    f"Task {task.name!r} does not pickle (lambdas?); running in-process. Pass it as "
                    "'package.module:factory' to use worker processes.",
                    stacklevel=3,
                )
            workers = 0
        refs.append(task)
    return refs, workers


def _rules(budget: int, seeds: int) -> dict[str, str]:
    return {
        "defaults": f"each optimizer as torch builds it (default lr and settings), seeds 1..{seeds}",
        "tuning budget": f"{budget} trials per optimizer per task × regime, tuning seed 0",
        "lr grid": (
            f"log-spaced over [{protocol.LR_LO:g}, {protocol.LR_HI:g}], widened to whole decades reaching "
            "0.1× and 10× the optimizer's default lr; up to a third of the budget goes to the knob "
            f"(its other catalog values at the best lr) while at least min(budget, {protocol.MIN_LR_POINTS}) "
            "lrs remain"
        ),
        "selection": protocol.SELECTION_RULE,
        "tuned": f"the selected setting rerun with fresh seeds 1..{seeds}",
        "evaluation": (
            f"{EVALS} evaluations per run (plus at step 0) on the whole validation set and a fixed "
            f"subset of ≤ {TRAIN_EVAL_MAX} training examples; a run diverges when its loss is not finite "
            "or exceeds 1000× the initial validation loss"
        ),
        "target": (
            "steps and training seconds (evaluation excluded) until the validation metric first "
            "meets the task's target"
        ),
        "good-lr window": (
            f"decades of the lr grid whose tuning loss is within {metrics.GOOD_FRACTION:g} of the way "
            "from the best loss any optimizer reached on the problem back to the initial loss"
        ),
        "ranking": (
            "per problem by mean final validation loss over seeds (any diverged seed: last); top group = "
            "mean − std reaches the best's mean + std; recommended = best mean rank tuned, ties by "
            "top-group count, then mean rank with defaults"
        ),
    }


def _session(plan: _Plan, staging: Path, landscapes: bool, progress, started: float) -> Results:
    total = sum(s.total for s in plan.studies)
    done = [0]

    def say(item: Run | str | None) -> None:
        if progress is not None:
            progress(done[0], total, item)

    def tick(run: Run) -> None:
        done[0] += 1
        say(run)

    say(None)
    workers = plan.settings.workers
    pool = runner.executor(workers)
    try:
        runner.execute(plan.studies, pool, workers, tick)
        trained = time.perf_counter()
        say("drawing figures")
        records = metrics.study_records(plan.studies)
        sparse = [i.name for i in plan.infos if "sparse" in i.tags]
        measured = _results(plan, records, recommend(records, plan.settings.seeds, sparse))
        gallery_done = _gallery(pool, plan, staging, landscapes)  # longest jobs first
        figs = _figures(pool, measured, staging)
        drawn = time.perf_counter()
        if landscapes:
            say("rendering landscapes")
        items, note = gallery_done()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    timing = Timing(
        runs=total,
        training_s=round(trained - started, 2),
        figures_s=round(drawn - trained, 2),
        landscapes_s=round(time.perf_counter() - drawn, 2),
        total_s=round(time.perf_counter() - started, 2),
    )
    res = replace(measured, landscapes=items, landscapes_note=note, timing=timing)
    res.to_json(staging / "results.json")
    report.render(res, figs, staging)
    return res


def _gallery(pool, plan: _Plan, staging: Path, landscapes: bool):
    if not landscapes:
        return lambda: (None, "not requested")
    return gallery.submit(pool, staging, plan.settings.optimizers, plan.settings.quick)


def _figures(pool, res: Results, staging: Path) -> dict[tuple[str, str], str]:
    jobs = figures.jobs(res)
    paths = runner.map_jobs(pool, figures.draw, [(fn, str(staging), args) for _, _, fn, args in jobs])
    return {(kind, name): path for (kind, name, _, _), path in zip(jobs, paths)}


def _results(plan: _Plan, records, rec) -> Results:
    """Everything measured and concluded; the landscapes and the timing come last."""
    return Results(
        schema=SCHEMA_ID,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        environment={
            "descent": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        settings=plan.settings,
        tasks=plan.infos,
        optimizers=[_optimizer(e) for e in plan.entries],
        runs=[r for s in plan.studies for r in s.ordered()],
        studies=records,
        recommendation=rec,
        landscapes=None,
        landscapes_note=None,
        timing=Timing(0, 0.0, 0.0, 0.0, 0.0),
    )


def _optimizer(e: catalog.Entry) -> OptimizerInfo:
    knob = KnobValues(e.knob[0], jsonable(list(e.knob[1]))) if e.knob else None
    return OptimizerInfo(e.key, e.label, e.color, e.default_lr, knob, list(protocol.lr_range(e)))


def _publish(staging: Path, out: Path, names: tuple[str, ...]) -> None:
    """Move the finished report into ``out``, replacing ``names`` there; ``index.html`` last."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:  # an earlier report's files, so none outlives this one
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for name in sorted((p.name for p in staging.iterdir()), key=lambda n: n == "index.html"):
        shutil.move(str(staging / name), str(out / name))
