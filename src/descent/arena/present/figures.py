"""Which figures the report shows, and the data each is drawn from: all of it read from
a :class:`~descent.arena.records.Results`, so a saved ``results.json`` redraws them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..analysis.metrics import band, problem_scale, threshold
from ..records import BUDGETS, OptimizerInfo, Results, jsonable
from ..tasks.data import REGIME_LABELS
from . import plots

Job = tuple[str, str, Callable[..., str], tuple]  # (kind, name, plot function, its args)


def jobs(results: Results) -> list[Job]:
    """Every figure of the report: per task its curves and lr sensitivity, then the
    rank heatmap and the performance profiles."""
    return task_jobs(results) + summary_jobs(results)


def _line(o: OptimizerInfo) -> dict[str, Any]:
    return {"label": o.label, "color": o.color, "key": o.key}


def task_jobs(results: Results) -> list[Job]:
    """(kind, name, function, args) per figure: each task's curves and lr sensitivity."""
    out: list[Job] = []
    seeds = results.settings.seeds
    for info in results.tasks:
        name = info.name
        curve_panels, sens_panels = [], []
        for regime, facts in info.regimes.items():
            studies = results.studies_of(name, regime)
            title = f"{REGIME_LABELS[regime]} · {facts.steps} steps"
            lines, sens, tuning = [], [], []
            for s in studies:
                line = _line(results.optimizer(s.optimizer))
                tuned = results.runs_of(name, regime, s.optimizer, "tuned")
                curves = {k: band(tuned, k) for k in ("val_loss", "val_metric")}
                lines.append({**line, **curves})
                sens.append({**line, "points": jsonable(s.sensitivity)})
                tuning += results.runs_of(name, regime, s.optimizer, "lr", "knob")
            curve_panels.append({"title": title, "lines": lines})
            limit = threshold(*problem_scale(tuning))
            sens_panels.append({"title": title, "lines": sens, "threshold": limit})
        title = f"{info.title}: tuned, mean and min–max over {seeds} seeds"
        curves_args = (f"figures/{name}-curves.png", title, curve_panels, info.metric_name, info.target)
        out.append(("curves", name, plots.curves, curves_args))
        sens_args = (f"figures/{name}-lr.png", f"{info.title}: learning-rate sensitivity", sens_panels)
        out.append(("lr", name, plots.sensitivity, sens_args))
    return out


def summary_jobs(results: Results) -> list[Job]:
    """The rank heatmap and the performance profiles over all problems."""
    rec = results.recommendation
    keys = results.settings.optimizers
    names = [f"{t}/{r}" for t, r in rec.problems]
    nan = float("nan")
    rows = [
        {
            "label": results.optimizer(k).label,
            **{b: [ranks.get(k, nan) for ranks in rec.ranks[b]] for b in BUDGETS},
        }
        for k in keys
    ]
    boards = rec.leaderboards["all"]
    lines = {
        b: [
            {"label": o.label, "color": o.color, "profile": boards[b][o.key].profile}
            for o in map(results.optimizer, keys)
            if o.key in boards[b]
        ]
        for b in BUDGETS
    }
    return [
        ("summary", "ranks", plots.ranks, ("figures/ranks.png", names, rows)),
        ("summary", "profiles", plots.profiles, ("figures/profiles.png", rec.taus, lines)),
    ]


def draw(fn, root: str, args: tuple) -> str:
    """Run a plot function with its output path under ``root``; returns the relative path."""
    fn(str(Path(root) / args[0]), *args[1:])
    return args[0]
