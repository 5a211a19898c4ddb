"""From runs to numbers: mean ± spread over seeds, steps and time to target, and
tunability (how wide the band of good learning rates is)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from ..measure.protocol import Study
from ..records import Best, Knob, Run, Stats, StudyRecord, Summary, Trial, finite, jsonable, score

FINAL_KEYS = ("train_loss", "val_loss", "train_metric", "val_metric")
#: A learning rate is "good" when its final validation loss gets this close to the best
#: any optimizer reached on the problem, as a fraction of the way from the initial loss.
GOOD_FRACTION = 0.2


def stats(values: Iterable[float | None]) -> Stats | None:
    """Mean, sample standard deviation, min and max of the non-missing values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return Stats(_r(statistics.fmean(xs)), _r(std), _r(min(xs)), _r(max(xs)), len(xs))


def _r(x: float) -> float:
    return float(f"{x:.6g}")


def summarize(runs: Sequence[Run]) -> Summary:
    """Seeds of one setting: final metrics, divergences, steps and time to target."""
    finals = [r.final for r in runs if r.final is not None]
    values = {k: stats(getattr(f, k) for f in finals) for k in FINAL_KEYS}
    diverged = sum(bool(r.diverged) for r in runs)
    reached = [r for r in runs if r.steps_to_target is not None]
    val = values["val_loss"]
    return Summary(
        **values,
        n=len(runs),
        diverged=diverged,
        reached=len(reached),
        steps_to_target=_median(r.steps_to_target for r in reached),
        time_to_target=_median(r.time_to_target for r in reached),
        train_time=_median(r.train_time for r in runs),
        score=finite(score(val.mean if val else None, diverged)),
    )


def _median(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return _r(statistics.median(xs)) if xs else None


def problem_scale(tuning: Iterable[Run]) -> tuple[float, float]:
    """(initial validation loss, best tuning loss of any optimizer) on one problem, from
    its tuning runs (``lr`` and ``knob`` phases)."""
    initial = math.nan
    best = math.inf
    for r in tuning:
        best = min(best, r.score)
        first = r.curve.val_loss[0] if r.curve.val_loss else None
        if first is not None and math.isnan(initial):
            initial = first
    return initial, best


def threshold(initial: float, best: float) -> float | None:
    """The good-lr threshold: ``GOOD_FRACTION`` of the way from the best loss back to
    the initial one (``None`` when the best did not improve on the start)."""
    return best + GOOD_FRACTION * (initial - best) if initial > best else None


def lr_window(grid: Sequence[float], lr_runs: Sequence[Run], initial: float, best: float) -> float | None:
    """Decades of learning rate (on the study's grid) whose tuning run's validation loss
    is within ``GOOD_FRACTION`` of the way from the best loss back to the initial one.
    Each good grid point counts one grid spacing; ``None`` with a single-point grid."""
    if len(grid) < 2 or not (math.isfinite(initial) and math.isfinite(best)):
        return None
    limit = best + GOOD_FRACTION * max(initial - best, 0.0)
    spacing = math.log10(grid[-1] / grid[0]) / (len(grid) - 1)
    good = sum(r.score <= limit for r in lr_runs)
    return round(good * spacing, 3)


def sensitivity(tuning: Sequence[Run]) -> list[Trial]:
    """The tuning trials: lr, knob setting and final validation loss (None: diverged)."""
    return [Trial(r.phase, r.lr, r.hyper, finite(r.score)) for r in tuning]


def band(runs: Sequence[Run], key: str = "val_loss") -> dict[str, list] | None:
    """Mean and min–max of a curve over seeds, on the steps every seed evaluated."""
    curves = [r.curve for r in runs if r.curve.step]
    if not curves:
        return None
    n = min(len(c.step) for c in curves)
    steps = curves[0].step[:n]
    mean, lo, hi = [], [], []
    for i in range(n):
        xs = [getattr(c, key)[i] for c in curves if getattr(c, key)[i] is not None]
        mean.append(statistics.fmean(xs) if xs else None)
        lo.append(min(xs) if xs else None)
        hi.append(max(xs) if xs else None)
    return {"step": steps, "mean": mean, "lo": lo, "hi": hi}


def study_records(studies: Sequence[Study]) -> list[StudyRecord]:
    """Every study's record, in plan order (the good-lr window needs its whole problem)."""
    by_problem: dict[tuple[str, str], list[Study]] = {}
    for s in studies:
        by_problem.setdefault((s.task_name, s.regime), []).append(s)
    scale = {
        p: problem_scale(r for s in group for r in s.phase("lr") + s.phase("knob"))
        for p, group in by_problem.items()
    }
    return [study_record(s, *scale[(s.task_name, s.regime)]) for s in studies]


def study_record(study: Study, initial: float, best: float) -> StudyRecord:
    """One study's record in results.json."""
    knob = study.entry.knob
    chosen = study.best
    return StudyRecord(
        task=study.task_name,
        regime=study.regime,  # type: ignore[arg-type]
        optimizer=study.entry.key,
        budget=study.budget,
        steps=study.steps,
        lr_grid=list(study.lr_grid),
        knob=Knob(knob[0], jsonable(list(study.knob_values))) if knob else None,
        best=Best(chosen.lr, chosen.hyper, chosen.id) if chosen else Best(None, {}, None),
        defaults=summarize(study.phase("defaults")),
        tuned=summarize(study.phase("tuned")),
        sensitivity=sensitivity(study.phase("lr") + study.phase("knob")),
        lr_window_decades=lr_window(study.lr_grid, study.phase("lr"), initial, best),
    )
