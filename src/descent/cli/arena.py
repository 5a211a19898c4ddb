"""``descent arena``: the tuned, seeded comparison, its report and its recommendation."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

DESCRIPTION = """\
Compare optimizers on small built-in tasks (or yours) in three data regimes: full-batch
GD, mini-batch GD and SGD. Each optimizer runs with its defaults and with a learning rate
(and its key hyperparameter) tuned on a log grid within a budget; the best setting is
rerun with several seeds. Writes index.html, figures/ and results.json to --out and
prints the recommendation.

--quick: 3 tasks × 2 regimes, budget 4, 2 seeds, 0.4× the steps (about 20 s on 2 cores).
default: 6 tasks × their regimes (16 problems), budget 7, 3 seeds (about 3 min on 2 cores).
--report-only RESULTS: redraw figures/ and index.html from a saved results.json (seconds;
nothing is trained), next to it or in --out.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "arena",
        help="tuned, seeded optimizer comparison with an HTML report and a recommendation",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smaller run (under a minute on 2 cores)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: arena-out; with --report-only, the folder of RESULTS)",
    )
    p.add_argument(
        "--report-only",
        metavar="RESULTS",
        help="redraw the report from a saved results.json without training anything",
    )
    p.add_argument("--tasks", metavar="LIST", help="comma-separated built-in task names (default: all)")
    p.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="your own task: an import path to a Task or a function returning one (repeatable)",
    )
    p.add_argument(
        "--optimizers",
        metavar="LIST",
        help="comma-separated catalog keys (default: the notes' + adamw, sfadamw, adopt, adafactor)",
    )
    p.add_argument("--budget", type=int, metavar="N", help="tuning trials per optimizer per problem")
    p.add_argument("--seeds", type=int, metavar="K", help="seeds for the defaults and the tuned setting")
    p.add_argument("--workers", type=int, default=2, metavar="W", help="worker processes (0: in-process)")
    p.add_argument("--no-landscapes", action="store_true", help="skip the landscape animations")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        from descent import arena
    except ModuleNotFoundError as exc:
        print(f"descent arena: needs {exc.name!r}: pip install 'descent[arena]'", file=sys.stderr)
        return 2
    if args.report_only is not None:
        return _report_only(args, arena)
    out = args.out or "arena-out"
    tasks = _task_list(args)
    start = time.perf_counter()
    try:
        with _Progress(enabled=not args.no_progress) as bar:
            results = arena.run(
                tasks=tasks,
                optimizers=args.optimizers,
                out=out,
                quick=args.quick,
                budget=args.budget,
                seeds=args.seeds,
                workers=args.workers,
                landscapes=not args.no_landscapes,
                progress=bar.update,
            )
    except ValueError as exc:  # bad input: named task/optimizer, budget, seeds, task import
        print(f"descent arena: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("descent arena: interrupted; no report written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed run: say why, write nothing
        print(f"descent arena: failed, no report written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    from descent.arena.present.summary import print_summary

    print_summary(results, out, time.perf_counter() - start)
    return 0


#: What --report-only does not combine with: the options that shape a run.
_RUN_ONLY = ("quick", "tasks", "task", "optimizers", "budget", "seeds", "no_landscapes")


def _report_only(args: argparse.Namespace, arena: Any) -> int:
    given = [f"--{k.replace('_', '-')}" for k in _RUN_ONLY if getattr(args, k) not in (None, False, [])]
    if given:
        print(f"descent arena: error: --report-only trains nothing; drop {', '.join(given)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        results = arena.redraw(args.report_only, args.out, workers=args.workers)
    except ValueError as exc:
        print(f"descent arena: error: {exc}", file=sys.stderr)
        return 2
    from pathlib import Path

    from descent.arena.present.summary import print_summary

    source = Path(args.report_only)
    out = args.out or (source if source.is_dir() else source.parent)
    print_summary(results, out, time.perf_counter() - start)
    return 0


def _task_list(args: argparse.Namespace) -> list[str] | None:
    names = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    names += args.task
    return names or None


class _Progress:
    """A rich progress bar over training runs (stderr), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.task = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("arena"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("runs"),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=False,
            )
            self.bar.__enter__()
        return self

    def update(self, done: int, total: int, item: Any) -> None:
        """``item``: a finished run, a stage's name, or None."""
        if self.bar is None:
            return
        if self.task is None:
            self.task = self.bar.add_task("", total=total)
        if item is None or isinstance(item, str):
            what = item or ""
        else:
            what = f"{item.task} · {item.regime} · {item.optimizer}"
        self.bar.update(self.task, completed=done, total=total, description=what)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
