"""The recommendation's reasons, in words, each sentence filled from measured numbers.

The notes' three claims ("adaptive methods for sparse data", "Adam is generally good",
"SGD/momentum are slower but may generalize better") are checked against the results
and reported as holding or not; which optimizers are adaptive is a property of their
update rule (a per-coordinate second moment), not of any result.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from .recommend import ADAPTIVE, SGD_FAMILY, judge


def reasons(
    probs, scopes, choice, records, tasks, seeds, label: Callable[[str], str], regime_labels
) -> list[str]:
    out = [_headline(scopes["all"], choice["all"], len(probs), seeds, label)]
    out.append(_defaults(scopes["all"], choice["all"], label))
    out.append(_by_regime(scopes, choice, label, regime_labels))
    for line in (
        _tunability(records, label),
        _speed(records, label),
        _sparse(probs, tasks, label, regime_labels),
        _adam(scopes["all"]),
        _generalization(records),
    ):
        if line:
            out.append(line)
    return out


def _headline(all_scope, pick, n_problems, seeds, label) -> str:
    key = pick["tuned"]
    t = all_scope["tuned"][key]
    n_opt = len(all_scope["tuned"])
    return (
        f"Recommended: {label(key)}. With its learning rate tuned, it has the best mean rank "
        f"({t['mean_rank']:.2f} among {n_opt} optimizers) over {n_problems} task × regime problems, "
        f"is within seed noise of the best on {t['top']} of {t['problems']} and best outright on "
        f"{t['wins']} (ranks by mean final validation loss over {seeds} seeds)."
    )


def _defaults(all_scope, pick, label) -> str:
    d = all_scope["defaults"]
    best = pick["defaults"]
    tuned_key = pick["tuned"]
    if best == tuned_key:
        return (
            f"It also ranks best without any tuning (torch's default settings): mean rank "
            f"{d[best]['mean_rank']:.2f}, within seed noise of the best on {d[best]['top']} of "
            f"{d[best]['problems']}."
        )
    worst = max(d, key=lambda k: (d[k]["mean_rank"], k))
    return (
        f"Without tuning (torch's default settings) {label(best)} ranks best (mean rank "
        f"{d[best]['mean_rank']:.2f}; {label(tuned_key)} {d[tuned_key]['mean_rank']:.2f}); "
        f"{label(worst)} ranks last with its defaults ({d[worst]['mean_rank']:.2f})."
    )


def _by_regime(scopes, choice, label, regime_labels) -> str:
    parts = []
    for regime, boards in scopes.items():
        if regime == "all":
            continue
        t, d = choice[regime]["tuned"], choice[regime]["defaults"]
        n = boards["tuned"][t]["problems"]
        parts.append(
            f"{regime_labels.get(regime, regime)}: {label(t)} tuned (mean rank "
            f"{boards['tuned'][t]['mean_rank']:.2f} over {n} tasks), {label(d)} with defaults "
            f"({boards['defaults'][d]['mean_rank']:.2f})"
        )
    return "By data regime — " + "; ".join(parts) + "."


def _by_optimizer(records, value) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for rec in records:
        v = value(rec)
        if v is not None:
            out.setdefault(rec["optimizer"], []).append(v)
    return out


def _tunability(records, label) -> str | None:
    windows = _by_optimizer(records, lambda r: r["lr_window_decades"])
    if len(windows) < 2:
        return None
    med = {k: statistics.median(v) for k, v in windows.items()}
    wide = max(med, key=lambda k: (med[k], k))
    narrow = min(med, key=lambda k: (med[k], k))
    return (
        f"Tunability: {label(wide)} has the widest band of good learning rates (median "
        f"{med[wide]:.2f} decades of its grid), {label(narrow)} the narrowest ({med[narrow]:.2f}); "
        f"a narrow band means the lr must be tuned, not guessed."
    )


def _speed(records, label) -> str | None:
    def fraction(rec):
        t = rec["tuned"]
        if not t["n"] or t["steps_to_target"] is None or t["reached"] < t["n"]:
            return None
        steps = max(rec.get("steps", 0), 1)
        return t["steps_to_target"] / steps

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
        tail = f"; the fastest to it is {label(quick)} (median {100 * med[quick]:.0f}% of the step budget)"
    who = _join([label(k) for k in most])
    verb = "reaches" if len(most) == 1 else "reach"
    return (
        f"Speed: tuned, {who} {verb} the task's target on every seed on {top} of {n} problems "
        f"(the most){tail}."
    )


def _sparse(probs, tasks, label, regime_labels) -> str | None:
    sparse = [t["name"] for t in tasks if "sparse" in t.get("tags", ())]
    lines = []
    for (task, regime), recs in probs.items():
        if task not in sparse:
            continue
        ranks = {k: v["rank"] for k, v in judge(recs, "tuned").items()}
        ada = [k for k in ranks if k in ADAPTIVE]
        other = [k for k in ranks if k not in ADAPTIVE]
        if not ada or not other:
            continue
        a = min(ada, key=lambda k: (ranks[k], k))
        o = min(other, key=lambda k: (ranks[k], k))
        verdict = "holds" if ranks[a] < ranks[o] else "does not hold"
        lines.append(
            f"{task} / {regime_labels.get(regime, regime)}: best adaptive {label(a)} ranks "
            f"{ranks[a]:g}, best non-adaptive {label(o)} {ranks[o]:g} — the advice {verdict} here"
        )
    if not lines:
        return None
    return "The notes advise adaptive learning rates for sparse data. " + "; ".join(lines) + "."


def _adam(all_scope) -> str | None:
    tuned, defaults = all_scope["tuned"], all_scope["defaults"]
    if "adam" not in tuned or len(tuned) < 2:
        return None
    place = 1 + sum(v["mean_rank"] < tuned["adam"]["mean_rank"] for v in tuned.values())
    return (
        f"The notes call Adam a good general choice: here its mean rank is "
        f"{tuned['adam']['mean_rank']:.2f} tuned ({_ordinal(place)} of {len(tuned)}) and "
        f"{defaults['adam']['mean_rank']:.2f} with defaults."
    )


def _generalization(records) -> str | None:
    def gap(rec):
        t = rec["tuned"]
        if t["val_loss"] is None or t["train_loss"] is None:
            return None
        return t["val_loss"]["mean"] - t["train_loss"]["mean"]

    sgd = [g for r in records if r["optimizer"] in SGD_FAMILY and (g := gap(r)) is not None]
    ada = [g for r in records if r["optimizer"] in ADAPTIVE and (g := gap(r)) is not None]
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
