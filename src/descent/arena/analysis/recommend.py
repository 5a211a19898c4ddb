"""The recommendation, derived from the measured results only.

A *problem* is one task in one data regime. On each problem the optimizers are ranked
by their mean final validation loss over seeds (a setting that diverged on any seed
ranks below every one that did not; ties share the average rank), separately for the
two tuning budgets: ``defaults`` (no tuning) and ``tuned`` (the budget's best setting).
An optimizer is in a problem's *top group* when its mean − std reaches the best's
mean + std (within seed noise of the best). The recommended optimizer has the best
mean rank over all problems with tuning; ties are broken by top-group count, then by
mean rank with defaults. Performance profiles (Dolan & Moré) show, for each factor τ,
the fraction of problems on which an optimizer's loss is within τ× the best.

The reasons, in words, are each filled from measured numbers. The notes' three claims
("adaptive methods for sparse data", "Adam is generally good", "SGD/momentum are slower
but may generalize better") are checked against the results and reported as holding or
not; which optimizers are adaptive is a property of their update rule (a per-coordinate
second moment, ``catalog.Entry.adaptive``), not of any result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ... import catalog
from ..records import BUDGETS, BoardRow, Choice, Recommendation, StudyRecord
from ..tasks.data import REGIME_LABELS, REGIMES

TAUS = tuple(round(1 + 0.05 * i, 2) for i in range(41))  # 1.00 … 3.00

Problem = tuple[str, str]  # (task, regime)


@dataclass(frozen=True)
class Placing:
    """One optimizer on one problem: its rank, whether it is the best outright, whether
    it is in the top group, and its loss as a multiple of the best's."""

    rank: float
    win: bool
    top: bool
    ratio: float


def average_ranks(scores: dict[str, float]) -> dict[str, float]:
    """Rank 1 = lowest score; equal scores share the mean of their ranks."""
    order = sorted(scores, key=lambda k: scores[k])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def problems(records: Sequence[StudyRecord]) -> dict[Problem, dict[str, StudyRecord]]:
    out: dict[Problem, dict[str, StudyRecord]] = {}
    for rec in records:
        out.setdefault((rec.task, rec.regime), {})[rec.optimizer] = rec
    return out


def judge(recs: dict[str, StudyRecord], budget: str) -> dict[str, Placing]:
    """Ranks, wins, top group and loss ratio to the best on one problem."""
    scored = {k: (r.summary(budget).rank_score, r.summary(budget).spread) for k, r in recs.items()}
    ranks = average_ranks({k: v[0] for k, v in scored.items()})
    best_mean, best_std = min(scored.values())
    out = {}
    for k, (mean, std) in scored.items():
        top = math.isfinite(mean) and mean - std <= best_mean + best_std
        ratio = mean / best_mean if best_mean > 0 else (1.0 if mean == best_mean else math.inf)
        out[k] = Placing(ranks[k], mean == best_mean and math.isfinite(mean), top, ratio)
    return out


def leaderboard(
    judged: dict[Problem, dict[str, Placing]], keys: Sequence[str], regime: str | None
) -> dict[str, BoardRow]:
    """Per optimizer over the judged problems of one regime (``None``: all): mean rank,
    wins, top-group count, worst rank and its performance profile."""
    mine_by = [j for p, j in judged.items() if regime is None or p[1] == regime]
    table = {}
    for k in keys:
        mine = [j[k] for j in mine_by if k in j]
        if not mine:
            continue
        table[k] = BoardRow(
            mean_rank=round(statistics.fmean(m.rank for m in mine), 3),
            wins=sum(m.win for m in mine),
            top=sum(m.top for m in mine),
            worst_rank=max(m.rank for m in mine),
            problems=len(mine),
            profile=[round(sum(m.ratio <= t for m in mine) / len(mine), 4) for t in TAUS],
        )
    return table


def best_of(table: dict[str, BoardRow], fallback: dict[str, BoardRow] | None = None) -> str:
    def key(k: str) -> tuple:
        extra = fallback[k].mean_rank if fallback and k in fallback else 0.0
        return (table[k].mean_rank, -table[k].top, extra, k)

    return min(table, key=key)


def recommend(records: Sequence[StudyRecord], seeds: int, sparse: Collection[str] = ()) -> Recommendation:
    """The recommendation: per-problem ranks, leaderboards by regime and budget, the
    choice, and its reasons. ``sparse``: the tasks tagged sparse (for the notes' claim)."""
    probs = problems(records)
    keys = list(dict.fromkeys(r.optimizer for r in records))
    regimes = [r for r in REGIMES if any(p[1] == r for p in probs)]
    judged = {b: {p: judge(recs, b) for p, recs in probs.items()} for b in BUDGETS}
    scopes = {
        scope: {b: leaderboard(judged[b], keys, None if scope == "all" else scope) for b in BUDGETS}
        for scope in ["all", *regimes]
    }
    choice = {
        scope: Choice(tuned=best_of(s["tuned"], s["defaults"]), defaults=best_of(s["defaults"], s["tuned"]))
        for scope, s in scopes.items()
    }
    ranks = {b: [{k: v.rank for k, v in judged[b][p].items()} for p in probs] for b in BUDGETS}
    return Recommendation(
        optimizer=choice["all"].tuned,
        choice=choice,
        leaderboards=scopes,
        taus=list(TAUS),
        problems=[list(p) for p in probs],
        ranks=ranks,
        text=reasons(list(probs), ranks["tuned"], scopes, choice, records, seeds, sparse),
    )


# -- the reasons ---------------------------------------------------------------------------
def _label(key: str) -> str:
    return catalog.get(key).label


def reasons(probs, tuned_ranks, scopes, choice, records, seeds, sparse) -> list[str]:
    out = [_headline(scopes["all"], choice["all"], len(probs), seeds)]
    out.append(_defaults(scopes["all"], choice["all"]))
    out.append(_by_regime(scopes, choice))
    for line in (
        _tunability(records),
        _speed(records),
        _sparse(probs, tuned_ranks, sparse),
        _adam(scopes["all"]),
        _generalization(records),
    ):
        if line:
            out.append(line)
    return out


def _headline(all_scope, pick: Choice, n_problems: int, seeds: int) -> str:
    key = pick.tuned
    t = all_scope["tuned"][key]
    n_opt = len(all_scope["tuned"])
    return (
        f"Recommended: {_label(key)}. With its learning rate tuned, it has the best mean rank "
        f"({t.mean_rank:.2f} among {n_opt} optimizers) over {n_problems} task × regime problems, "
        f"is within seed noise of the best on {t.top} of {t.problems} and best outright on "
        f"{t.wins} (ranks by mean final validation loss over {seeds} seeds)."
    )


def _defaults(all_scope, pick: Choice) -> str:
    d = all_scope["defaults"]
    best, tuned_key = pick.defaults, pick.tuned
    if best == tuned_key:
        return (
            f"It also ranks best without any tuning (torch's default settings): mean rank "
            f"{d[best].mean_rank:.2f}, within seed noise of the best on {d[best].top} of "
            f"{d[best].problems}."
        )
    worst = max(d, key=lambda k: (d[k].mean_rank, k))
    return (
        f"Without tuning (torch's default settings) {_label(best)} ranks best (mean rank "
        f"{d[best].mean_rank:.2f}; {_label(tuned_key)} {d[tuned_key].mean_rank:.2f}); "
        f"{_label(worst)} ranks last with its defaults ({d[worst].mean_rank:.2f})."
    )


def _by_regime(scopes, choice: dict[str, Choice]) -> str:
    parts = []
    for regime, boards in scopes.items():
        if regime == "all":
            continue
        t, d = choice[regime].tuned, choice[regime].defaults
        n = boards["tuned"][t].problems
        parts.append(
            f"{REGIME_LABELS.get(regime, regime)}: {_label(t)} tuned (mean rank "
            f"{boards['tuned'][t].mean_rank:.2f} over {n} tasks), {_label(d)} with defaults "
            f"({boards['defaults'][d].mean_rank:.2f})"
        )
    return "By data regime — " + "; ".join(parts) + "."


def _by_optimizer(records: Sequence[StudyRecord], value) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for rec in records:
        v = value(rec)
        if v is not None:
            out.setdefault(rec.optimizer, []).append(v)
    return out


def _tunability(records: Sequence[StudyRecord]) -> str | None:
    windows = _by_optimizer(records, lambda r: r.lr_window_decades)
    if len(windows) < 2:
        return None
    med = {k: statistics.median(v) for k, v in windows.items()}
    wide = max(med, key=lambda k: (med[k], k))
    narrow = min(med, key=lambda k: (med[k], k))
    return (
        f"Tunability: {_label(wide)} has the widest band of good learning rates (median "
        f"{med[wide]:.2f} decades of its grid), {_label(narrow)} the narrowest ({med[narrow]:.2f}); "
        f"a narrow band means the lr must be tuned, not guessed."
    )


def _speed(records: Sequence[StudyRecord]) -> str | None:
    def fraction(rec: StudyRecord) -> float | None:
        t = rec.tuned
        if not t.n or t.steps_to_target is None or t.reached < t.n:
            return None
        return t.steps_to_target / max(rec.steps, 1)

    reached = _by_optimizer(records, lambda r: 1.0 if fraction(r) is not None else 0.0)
    if not reached:
        return None
    counts = {k: int(sum(v)) for k, v in reached.items()}
    n = max(len(v) for v in reached.values())
    top = max(counts.values())
    most = [k for k in counts if counts[k] == top]
    fast = _by_optimizer(records, fraction)
    tail = ""
    if fast:
        med = {k: statistics.median(v) for k, v in fast.items()}
        quick = min(med, key=lambda k: (med[k], k))
        tail = f"; the fastest to it is {_label(quick)} (median {100 * med[quick]:.0f}% of the step budget)"
    who = _join([_label(k) for k in most])
    verb = "reaches" if len(most) == 1 else "reach"
    return (
        f"Speed: tuned, {who} {verb} the task's target on every seed on {top} of {n} problems "
        f"(the most){tail}."
    )


def _sparse(probs: list[Problem], tuned_ranks: list[dict[str, float]], sparse: Collection[str]) -> str | None:
    lines = []
    for (task, regime), ranks in zip(probs, tuned_ranks):
        if task not in sparse:
            continue
        # (an optimizer that splits the model between two rules, Muon + AdamW, is neither)
        single = [k for k in ranks if not catalog.get(k).model]
        ada = [k for k in single if catalog.get(k).adaptive]
        other = [k for k in single if not catalog.get(k).adaptive]
        if not ada or not other:
            continue
        a = min(ada, key=lambda k: (ranks[k], k))
        o = min(other, key=lambda k: (ranks[k], k))
        verdict = "holds" if ranks[a] < ranks[o] else "does not hold"
        lines.append(
            f"{task} / {REGIME_LABELS.get(regime, regime)}: best adaptive {_label(a)} ranks "
            f"{ranks[a]:g}, best non-adaptive {_label(o)} {ranks[o]:g} — the advice {verdict} here"
        )
    if not lines:
        return None
    return "The notes advise adaptive learning rates for sparse data. " + "; ".join(lines) + "."


def _adam(all_scope) -> str | None:
    tuned, defaults = all_scope["tuned"], all_scope["defaults"]
    if "adam" not in tuned or len(tuned) < 2:
        return None
    place = 1 + sum(v.mean_rank < tuned["adam"].mean_rank for v in tuned.values())
    return (
        f"The notes call Adam a good general choice: here its mean rank is "
        f"{tuned['adam'].mean_rank:.2f} tuned ({_ordinal(place)} of {len(tuned)}) and "
        f"{defaults['adam'].mean_rank:.2f} with defaults."
    )


def _generalization(records: Sequence[StudyRecord]) -> str | None:
    def gap(rec: StudyRecord) -> float | None:
        t = rec.tuned
        if t.val_loss is None or t.train_loss is None:
            return None
        return t.val_loss.mean - t.train_loss.mean

    sgd = [g for r in records if catalog.get(r.optimizer).sgd_family and (g := gap(r)) is not None]
    ada = [g for r in records if catalog.get(r.optimizer).adaptive and (g := gap(r)) is not None]
    if not sgd or not ada:
        return None
    s, a = statistics.median(sgd), statistics.median(ada)
    verdict = "smaller" if s < a else "not smaller"
    return (
        f"The notes say SGD and momentum may generalize better: the median generalization gap "
        f"(validation − training loss, tuned) is {s:.3f} for the SGD family and {a:.3f} for the "
        f"adaptive methods — {verdict} for the SGD family here."
    )


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
