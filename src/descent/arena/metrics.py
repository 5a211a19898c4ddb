"""From runs to numbers: mean ± spread over seeds, steps and time to target, and
tunability (how wide the band of good learning rates is)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from .protocol import Study, val_loss_of

FINAL_KEYS = ("train_loss", "val_loss", "train_metric", "val_metric")
#: A learning rate is "good" when its final validation loss gets this close to the best
#: any optimizer reached on the problem, as a fraction of the way from the initial loss.
GOOD_FRACTION = 0.2


def stats(values: Iterable[float | None]) -> dict[str, float] | None:
    """Mean, sample standard deviation, min and max of the non-missing values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {
        "mean": _r(statistics.fmean(xs)),
        "std": _r(std),
        "min": _r(min(xs)),
        "max": _r(max(xs)),
        "n": len(xs),
    }


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seeds of one setting: final metrics, divergences, steps and time to target."""
    finals = [r["final"] or {} for r in runs]
    out: dict[str, Any] = {k: stats(f.get(k) for f in finals) for k in FINAL_KEYS}
    out["n"] = len(runs)
    out["diverged"] = sum(bool(r["diverged"]) for r in runs)
    reached = [r for r in runs if r["steps_to_target"] is not None]
    out["reached"] = len(reached)
    out["steps_to_target"] = _median(r["steps_to_target"] for r in reached)
    out["time_to_target"] = _median(r["time_to_target"] for r in reached)
    out["train_time"] = _median(r["train_time"] for r in runs)
    # What the ranking uses: a setting that diverged on any seed is worse than any that didn't.
    out["score"] = None if out["diverged"] or out["val_loss"] is None else out["val_loss"]["mean"]
    return out


def _median(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return _r(statistics.median(xs)) if xs else None


def score(summary: dict[str, Any]) -> float:
    return math.inf if summary.get("score") is None else float(summary["score"])


def problem_scale(studies: Sequence[Study]) -> tuple[float, float]:
    """(initial validation loss, best tuning loss of any optimizer) on one problem."""
    initial = math.nan
    best = math.inf
    for study in studies:
        for r in study.phase("lr") + study.phase("knob"):
            best = min(best, val_loss_of(r))
            first = r["curve"]["val_loss"][0] if r["curve"]["val_loss"] else None
            if first is not None and math.isnan(initial):
                initial = first
    return initial, best


def lr_window(study: Study, initial: float, best: float) -> float | None:
    """Decades of learning rate (on the study's grid) whose tuning run's validation loss
    is within ``GOOD_FRACTION`` of the way from the best loss back to the initial one.
    Each good grid point counts one grid spacing; ``None`` with a single-point grid."""
    grid = study.lr_grid
    if len(grid) < 2 or not (math.isfinite(initial) and math.isfinite(best)):
        return None
    threshold = best + GOOD_FRACTION * max(initial - best, 0.0)
    spacing = math.log10(grid[-1] / grid[0]) / (len(grid) - 1)
    good = sum(val_loss_of(r) <= threshold for r in study.phase("lr"))
    return round(good * spacing, 3)


def sensitivity(study: Study) -> list[dict[str, Any]]:
    """The tuning trials: lr, knob setting and final validation loss (None: diverged)."""
    return [
        {
            "phase": r["phase"],
            "lr": r["lr"],
            "hyper": r["hyper"],
            "val_loss": None if math.isinf(val_loss_of(r)) else val_loss_of(r),
        }
        for r in study.phase("lr") + study.phase("knob")
    ]


def band(runs: Sequence[dict[str, Any]], key: str = "val_loss") -> dict[str, list] | None:
    """Mean and min–max of a curve over seeds, on the steps every seed evaluated."""
    curves = [r["curve"] for r in runs if r["curve"]["step"]]
    if not curves:
        return None
    n = min(len(c["step"]) for c in curves)
    steps = curves[0]["step"][:n]
    mean, lo, hi = [], [], []
    for i in range(n):
        xs = [c[key][i] for c in curves if c[key][i] is not None]
        mean.append(statistics.fmean(xs) if xs else None)
        lo.append(min(xs) if xs else None)
        hi.append(max(xs) if xs else None)
    return {"step": steps, "mean": mean, "lo": lo, "hi": hi}


def study_record(study: Study, initial: float, best: float) -> dict[str, Any]:
    """One study in results.json."""
    knob = study.entry.knob
    chosen = study.best or {}
    return {
        "task": study.task_name,
        "regime": study.regime,
        "optimizer": study.entry.key,
        "budget": study.budget,
        "steps": study.steps,
        "lr_grid": study.lr_grid,
        "knob": {"name": knob[0], "tried": [_json(v) for v in study.knob_values]} if knob else None,
        "best": {"lr": chosen.get("lr"), "hyper": chosen.get("hyper", {}), "id": chosen.get("id")},
        "defaults": summarize(study.phase("defaults")),
        "tuned": summarize(study.phase("tuned")),
        "sensitivity": sensitivity(study),
        "lr_window_decades": lr_window(study, initial, best),
    }


def _json(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
