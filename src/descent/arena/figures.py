"""Which figures the report shows, and the data each is drawn from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import catalog
from . import plots
from .data import REGIME_LABELS
from .metrics import GOOD_FRACTION, band, problem_scale, sensitivity
from .protocol import Study


def _line(study: Study) -> dict[str, Any]:
    entry = study.entry
    return {"label": entry.label, "color": entry.color, "key": entry.key}


def _group(studies: Sequence[Study]) -> dict[str, dict[str, list[Study]]]:
    """Studies by task, then regime, in plan order."""
    out: dict[str, dict[str, list[Study]]] = {}
    for s in studies:
        out.setdefault(s.task_name, {}).setdefault(s.regime, []).append(s)
    return out


def task_jobs(studies: Sequence[Study], tasks: dict[str, dict[str, Any]], seeds: int) -> list[tuple]:
    """(function, args) per figure: each task's curves and lr sensitivity."""
    jobs: list[tuple] = []
    for name, by_regime in _group(studies).items():
        info = tasks[name]
        curve_panels, sens_panels = [], []
        for regime, group in by_regime.items():
            title = f"{REGIME_LABELS[regime]} · {group[0].steps} steps"
            curve_panels.append(
                {
                    "title": title,
                    "lines": [
                        {
                            **_line(s),
                            "val_loss": band(s.phase("tuned"), "val_loss"),
                            "val_metric": band(s.phase("tuned"), "val_metric"),
                        }
                        for s in group
                    ],
                }
            )
            initial, best = problem_scale(group)
            threshold = best + GOOD_FRACTION * (initial - best) if initial > best else None
            lines = [{**_line(s), "points": sensitivity(s)} for s in group]
            sens_panels.append({"title": title, "lines": lines, "threshold": threshold})
        title = f"{info['title']}: tuned, mean and min–max over {seeds} seeds"
        curves_args = (f"figures/{name}-curves.png", title, curve_panels, info["metric_name"], info["target"])
        jobs.append(("curves", name, plots.curves, curves_args))
        sens_args = (f"figures/{name}-lr.png", f"{info['title']}: learning-rate sensitivity", sens_panels)
        jobs.append(("lr", name, plots.sensitivity, sens_args))
    return jobs


def summary_jobs(
    records: Sequence[dict[str, Any]], recommendation: dict[str, Any], keys: Sequence[str]
) -> list[tuple]:
    """The rank heatmap and the performance profiles over all problems."""
    from .recommend import judge, problems

    probs = problems(records)
    names = [f"{t}/{r}" for t, r in probs]
    judged = {b: [judge(probs[p], b) for p in probs] for b in ("tuned", "defaults")}
    nan = float("nan")
    rows = [
        {
            "label": catalog.get(k).label,
            **{b: [j[k]["rank"] if k in j else nan for j in judged[b]] for b in ("tuned", "defaults")},
        }
        for k in keys
    ]
    boards = recommendation["leaderboards"]["all"]
    lines = {
        b: [
            {"label": catalog.get(k).label, "color": catalog.get(k).color, "profile": boards[b][k]["profile"]}
            for k in keys
            if k in boards[b]
        ]
        for b in ("tuned", "defaults")
    }
    return [
        ("summary", "ranks", plots.ranks, ("figures/ranks.png", names, rows)),
        ("summary", "profiles", plots.profiles, ("figures/profiles.png", recommendation["taus"], lines)),
    ]


def draw(fn, root: str, args: tuple) -> str:
    """Run a plot function with its output path under ``root``; returns the relative path."""
    fn(str(Path(root) / args[0]), *args[1:])
    return args[0]
