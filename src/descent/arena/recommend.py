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
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .. import catalog
from .data import REGIME_LABELS, REGIMES

BUDGETS = ("tuned", "defaults")
#: Optimizers with a per-coordinate learning rate (a second-moment estimate).
ADAPTIVE = frozenset(
    {"adagrad", "adadelta", "rmsprop", "adam", "nadam", "adamw", "amsgrad", "adamax", "radam"}
)
#: The SGD family of the notes: plain, heavy-ball and Nesterov momentum.
SGD_FAMILY = frozenset({"sgd", "momentum", "nag"})
TAUS = tuple(round(1 + 0.05 * i, 2) for i in range(41))  # 1.00 … 3.00


def _score(rec: dict[str, Any], budget: str) -> tuple[float, float]:
    s = rec[budget]
    if s.get("score") is None:
        return math.inf, 0.0
    return float(s["score"]), float(s["val_loss"]["std"])


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


def problems(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for rec in records:
        out[(rec["task"], rec["regime"])][rec["optimizer"]] = rec
    return dict(out)


def judge(recs: dict[str, dict[str, Any]], budget: str) -> dict[str, dict[str, Any]]:
    """Ranks, wins and top group on one problem."""
    scored = {k: _score(r, budget) for k, r in recs.items()}
    ranks = average_ranks({k: v[0] for k, v in scored.items()})
    best_mean, best_std = min(scored.values())
    out = {}
    for k, (mean, std) in scored.items():
        top = math.isfinite(mean) and mean - std <= best_mean + best_std
        ratio = mean / best_mean if best_mean > 0 else (1.0 if mean == best_mean else math.inf)
        out[k] = {
            "rank": ranks[k],
            "win": mean == best_mean and math.isfinite(mean),
            "top": top,
            "ratio": ratio,
        }
    return out


def leaderboard(
    probs: dict, keys: Sequence[str], budget: str, regime: str | None
) -> dict[str, dict[str, Any]]:
    """Per optimizer over the problems of one regime (``None``: all): mean rank, wins,
    top-group count, worst rank and its performance profile."""
    chosen = [p for p in probs if regime is None or p[1] == regime]
    judged = [judge(probs[p], budget) for p in chosen]
    table = {}
    for k in keys:
        mine = [j[k] for j in judged if k in j]
        if not mine:
            continue
        table[k] = {
            "mean_rank": round(statistics.fmean(m["rank"] for m in mine), 3),
            "wins": sum(m["win"] for m in mine),
            "top": sum(m["top"] for m in mine),
            "worst_rank": max(m["rank"] for m in mine),
            "problems": len(mine),
            "profile": [round(sum(m["ratio"] <= t for m in mine) / len(mine), 4) for t in TAUS],
        }
    return table


def best_of(table: dict[str, dict[str, Any]], fallback: dict[str, dict[str, Any]] | None = None) -> str:
    def key(k: str) -> tuple:
        extra = fallback[k]["mean_rank"] if fallback and k in fallback else 0.0
        return (table[k]["mean_rank"], -table[k]["top"], extra, k)

    return min(table, key=key)


def recommend(
    records: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]], seeds: int
) -> dict[str, Any]:
    """The recommendation: leaderboards by regime and budget, the choice, and its reasons."""
    probs = problems(records)
    keys = list(dict.fromkeys(r["optimizer"] for r in records))
    regimes = [r for r in REGIMES if any(p[1] == r for p in probs)]
    scopes: dict[str, dict[str, Any]] = {}
    for scope in ["all", *regimes]:
        scopes[scope] = {b: leaderboard(probs, keys, b, None if scope == "all" else scope) for b in BUDGETS}
    choice = {
        scope: {
            "tuned": best_of(s["tuned"], s["defaults"]),
            "defaults": best_of(s["defaults"], s["tuned"]),
        }
        for scope, s in scopes.items()
    }
    text = _reasons(probs, scopes, choice, records, tasks, seeds)
    return {
        "optimizer": choice["all"]["tuned"],
        "choice": choice,
        "leaderboards": scopes,
        "taus": list(TAUS),
        "problems": [list(p) for p in probs],
        "text": text,
    }


def _label(key: str) -> str:
    try:
        return catalog.get(key).label
    except ValueError:
        return key


def _reasons(probs, scopes, choice, records, tasks, seeds) -> list[str]:
    from .explain import reasons

    return reasons(probs, scopes, choice, records, tasks, seeds, _label, REGIME_LABELS)
