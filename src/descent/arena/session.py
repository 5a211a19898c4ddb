"""One arena session, start to finish: check the inputs, run every study, summarise,
draw, write ``results.json`` and ``index.html``, and only then publish them.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__, catalog
from . import figures, gallery, metrics, protocol, report, results, runner
from .data import REGIMES, batch_size_for
from .recommend import recommend
from .tasks import Task, TaskError, builtin_names, check, resolve
from .train import EVALS, TRAIN_EVAL_MAX


@dataclass(frozen=True)
class Mode:
    tasks: tuple[str, ...]
    regimes: tuple[str, ...]
    budget: int
    seeds: int
    step_scale: float


QUICK = Mode(("digits_mlp", "cancer_logreg", "sparse_logreg"), ("full", "minibatch"), 4, 2, 0.4)
DEFAULT = Mode(builtin_names(), REGIMES, 7, 3, 1.0)
#: What a session writes in ``out`` (and replaces there).
OUTPUTS = ("index.html", "results.json", "figures", "landscapes")


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
    progress: Callable[[int, int, dict[str, Any] | str | None], None] | None = None,
) -> dict[str, Any]:
    """Run the arena and write ``index.html``, ``results.json`` and ``figures/`` in ``out``.

    ``tasks``: built-in names, ``"package.module:factory"`` paths or :class:`Task`
    objects (default: all built-in tasks; ``quick``: three). ``optimizers``: catalog
    keys (default: the notes' set plus AdamW). ``budget``: tuning trials per optimizer
    per problem; ``seeds``: seeds for the defaults and the tuned setting. ``progress``
    is called as ``progress(done, total, item)``: ``item`` is a finished run's record,
    ``None`` at the start, or the stage after training (a string). Returns the results
    as written to ``results.json``. Raises ``ValueError`` (``TaskError``) on bad input
    before any training starts.
    """
    started = time.perf_counter()
    plan = _prepare(tasks, optimizers, out, quick, budget, seeds, workers)
    staging = plan.out.parent / f".{plan.out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        res = _session(plan, staging, landscapes, progress, started)
        _publish(staging, plan.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return res


@dataclass
class _Plan:
    out: Path
    entries: list[catalog.Entry]
    infos: list[dict[str, Any]]
    studies: list[protocol.Study]
    settings: dict[str, Any]


def _prepare(tasks, optimizers, out, quick, budget, seeds, workers) -> _Plan:
    """Check every input and lay out the studies; raises before anything is written."""
    mode = QUICK if quick else DEFAULT
    budget = mode.budget if budget is None else budget
    seeds = mode.seeds if seeds is None else seeds
    _check_numbers(budget, seeds, workers)
    entries = catalog.select(optimizers, default=(*catalog.NOTES, "adamw"))
    chosen = _tasks(tasks, mode)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    infos = [_info(task, facts, regimes, mode.step_scale) for task, facts, regimes in chosen]
    refs, workers = _refs([t for t, _, _ in chosen], workers)
    specs = [
        (ref, i["name"], tuple(i["regimes"]), {r: v["steps"] for r, v in i["regimes"].items()})
        for ref, i in zip(refs, infos)
    ]
    settings = {
        "quick": quick,
        "tasks": [i["name"] for i in infos],
        "optimizers": [e.key for e in entries],
        "budget": budget,
        "seeds": seeds,
        "workers": workers,
        "step_scale": mode.step_scale,
        "rules": _rules(budget, seeds),
    }
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


def _info(task: Task, facts: dict[str, Any], regimes: tuple[str, ...], scale: float) -> dict[str, Any]:
    by_regime = {}
    for r in regimes:
        steps = max(1, round(task.steps_for(r) * scale))
        batch = batch_size_for(r, facts["n_train"], task.batch_size)
        by_regime[r] = {
            "steps": steps,
            "batch_size": batch,
            "epochs": round(steps * batch / facts["n_train"], 3),
        }
    return {
        "name": task.name,
        "title": task.title,
        "description": task.description,
        "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "target": task.target,
        "chance": task.chance,
        "tags": list(task.tags),
        **facts,
        "regimes": by_regime,
    }


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


def _session(plan: _Plan, staging: Path, landscapes: bool, progress, started: float) -> dict[str, Any]:
    total = sum(s.total for s in plan.studies)
    done = [0]

    def say(item: dict[str, Any] | str | None) -> None:
        if progress is not None:
            progress(done[0], total, item)

    def tick(run: dict[str, Any]) -> None:
        done[0] += 1
        say(run)

    say(None)
    workers = plan.settings["workers"]
    pool = runner.executor(workers)
    try:
        runner.execute(plan.studies, pool, workers, tick)
        trained = time.perf_counter()
        say("drawing figures")
        records = _records(plan.studies)
        rec = recommend(records, plan.infos, plan.settings["seeds"])
        gallery_done = _gallery(pool, plan, staging, landscapes)  # longest jobs first
        figs = _figures(pool, plan, records, rec, staging)
        drawn = time.perf_counter()
        if landscapes:
            say("rendering landscapes")
        items, note = gallery_done()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    res = _results(plan, records, rec, items, note)
    res["timing"] = {
        "runs": total,
        "training_s": round(trained - started, 2),
        "figures_s": round(drawn - trained, 2),
        "landscapes_s": round(time.perf_counter() - drawn, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    res = results.clean(res)
    results.write(staging / "results.json", res)
    report.render(res, figs, staging)
    return res


def _records(studies: list[protocol.Study]) -> list[dict[str, Any]]:
    by_problem: dict[tuple[str, str], list[protocol.Study]] = {}
    for s in studies:
        by_problem.setdefault((s.task_name, s.regime), []).append(s)
    scale = {p: metrics.problem_scale(group) for p, group in by_problem.items()}
    return [metrics.study_record(s, *scale[(s.task_name, s.regime)]) for s in studies]


def _gallery(pool, plan: _Plan, staging: Path, landscapes: bool):
    if not landscapes:
        return lambda: (None, "not requested")
    return gallery.submit(pool, staging, [e.key for e in plan.entries], plan.settings["quick"])


def _figures(pool, plan: _Plan, records, rec, staging: Path) -> dict[tuple[str, str], str]:
    jobs = figures.task_jobs(plan.studies, {i["name"]: i for i in plan.infos}, plan.settings["seeds"])
    jobs += figures.summary_jobs(records, rec, [e.key for e in plan.entries])
    paths = runner.map_jobs(pool, figures.draw, [(fn, str(staging), args) for _, _, fn, args in jobs])
    return {(kind, name): path for (kind, name, _, _), path in zip(jobs, paths)}


def _results(plan: _Plan, records, rec, items, note) -> dict[str, Any]:
    return {
        "schema": results.SCHEMA_ID,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "descent": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": plan.settings,
        "tasks": plan.infos,
        "optimizers": [_optimizer(e) for e in plan.entries],
        "runs": [r for s in plan.studies for r in s.ordered()],
        "studies": records,
        "recommendation": rec,
        "landscapes": items,
        "landscapes_note": note,
    }


def _optimizer(e: catalog.Entry) -> dict[str, Any]:
    knob = {"name": e.knob[0], "values": list(e.knob[1])} if e.knob else None
    return {
        "key": e.key,
        "label": e.label,
        "color": e.color,
        "default_lr": e.default_lr,
        "knob": knob,
        "lr_range": list(protocol.lr_range(e)),
    }


def _publish(staging: Path, out: Path) -> None:
    """Move the finished report into ``out``; ``index.html`` last."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # an earlier report's files, so none outlives this one
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for name in sorted((p.name for p in staging.iterdir()), key=lambda n: n == "index.html"):
        shutil.move(str(staging / name), str(out / name))
