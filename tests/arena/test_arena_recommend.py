"""The recommendation follows the numbers: ranks, top groups and the chosen optimizer
are recomputed by hand on small synthetic result sets, and flipping the numbers flips
the recommendation."""

from __future__ import annotations

import dataclasses
import math

import pytest

from descent.arena.analysis.recommend import average_ranks, judge, recommend
from descent.arena.records import Best, Stats, StudyRecord, Summary


def _summary(mean: float | None, std: float = 0.0, train: float | None = None, diverged: int = 0) -> Summary:
    val = None if mean is None else Stats(mean, std, mean, mean, 3)
    train = (mean / 2 if train is None else train) if mean is not None else None
    good = mean is not None and mean < 0.5
    return Summary(
        train_loss=None if train is None else Stats(train, 0.0, train, train, 3),
        val_loss=val,
        train_metric=None,
        val_metric=None,
        n=3,
        diverged=diverged,
        reached=3 if good else 0,
        steps_to_target=10 if good else None,
        time_to_target=None,
        train_time=None,
        score=None if (mean is None or diverged) else mean,
    )


def record(task, regime, opt, tuned, defaults, std=0.0, window=1.0, diverged=0) -> StudyRecord:
    return StudyRecord(
        task=task,
        regime=regime,
        optimizer=opt,
        budget=1,
        steps=100,
        lr_grid=[],
        knob=None,
        best=Best(None, {}, None),
        defaults=_summary(defaults, std),
        tuned=_summary(tuned, std, diverged=diverged),
        sensitivity=[],
        lr_window_decades=window,
    )


SPARSE = {"b"}  # the tasks tagged sparse


def test_average_ranks_share_ties_and_put_inf_last():
    ranks = average_ranks({"x": 0.3, "y": 0.1, "z": 0.3, "w": math.inf})
    assert ranks == {"y": 1.0, "x": 2.5, "z": 2.5, "w": 4.0}


def test_top_group_is_overlap_with_the_best_within_seed_spread():
    recs = {
        "sgd": record("a", "full", "sgd", 0.50, 0.9, std=0.05),
        "adam": record("a", "full", "adam", 0.40, 0.9, std=0.05),  # best: 0.40 + 0.05 = 0.45
        "nag": record("a", "full", "nag", 0.60, 0.9, std=0.05),  # 0.55 > 0.45: out
        "adagrad": record("a", "full", "adagrad", 0.1, 0.9, diverged=1),  # a diverged seed: last
    }
    j = judge(recs, "tuned")
    assert {k for k, v in j.items() if v.top} == {"sgd", "adam"}  # 0.50 − 0.05 = 0.45 reaches 0.45
    assert j["adam"].rank == 1 and j["adam"].win
    assert j["adagrad"].rank == 4 and not j["adagrad"].top
    assert j["sgd"].ratio == pytest.approx(0.50 / 0.40)


def _records(tuned_best: str, defaults_best: str) -> list[StudyRecord]:
    out = []
    for task in ("a", "b"):
        for regime in ("full", "minibatch"):
            for opt in ("sgd", "momentum", "adagrad", "adam"):
                tuned = 0.2 if opt == tuned_best else 0.3 + 0.01 * len(opt)
                defaults = 0.25 if opt == defaults_best else 0.6 + 0.01 * len(opt)
                out.append(
                    record(task, regime, opt, tuned, defaults, window=2.0 if opt == "adagrad" else 1.0)
                )
    return out


@pytest.mark.parametrize(("tuned_best", "defaults_best"), [("adam", "adagrad"), ("momentum", "sgd")])
def test_recommendation_follows_the_measurements(tuned_best, defaults_best):
    rec = recommend(_records(tuned_best, defaults_best), seeds=3, sparse=SPARSE)
    assert rec.optimizer == tuned_best
    assert rec.choice["all"].defaults == defaults_best
    board = rec.leaderboards["all"]["tuned"]
    assert board[tuned_best].mean_rank == 1.0 and board[tuned_best].wins == 4
    # the others, by hand: tuned score 0.3 + 0.01·len(key) → shorter key, better rank
    others = sorted((k for k in board if k != tuned_best), key=lambda k: (len(k), k))
    assert [board[k].mean_rank for k in others] == sorted(board[k].mean_rank for k in others)
    labels = {"adam": "Adam", "momentum": "Momentum", "sgd": "SGD", "adagrad": "AdaGrad"}
    assert rec.text[0].startswith(f"Recommended: {labels[tuned_best]}.")
    assert labels[defaults_best] in rec.text[1]
    assert "AdaGrad has the widest band" in " ".join(rec.text)
    # the per-problem ranks are stored once, in problem order, and the boards agree with them
    assert rec.problems == [[t, r] for t in ("a", "b") for r in ("full", "minibatch")]
    assert all(ranks[tuned_best] == 1.0 for ranks in rec.ranks["tuned"])
    assert board["sgd"].worst_rank == max(ranks["sgd"] for ranks in rec.ranks["tuned"])


def test_sparse_check_reports_what_was_measured():
    holds = recommend(_records("adagrad", "adam"), seeds=3, sparse=SPARSE)
    fails = recommend(_records("momentum", "adam"), seeds=3, sparse=SPARSE)
    sparse_line = [t for t in holds.text if t.startswith("The notes advise adaptive")]
    assert sparse_line and "the advice holds here" in sparse_line[0] and "does not hold" not in sparse_line[0]
    sparse_line = [t for t in fails.text if t.startswith("The notes advise adaptive")]
    assert sparse_line and "does not hold" in sparse_line[0]


def test_regimes_are_ranked_separately():
    recs = [  # momentum is best in the full-batch regime only
        dataclasses.replace(r, tuned=_summary(0.1)) if (r.regime, r.optimizer) == ("full", "momentum") else r
        for r in _records("adam", "adam")
    ]
    rec = recommend(recs, seeds=3, sparse=SPARSE)
    assert rec.choice["full"].tuned == "momentum"
    assert rec.choice["minibatch"].tuned == "adam"
    assert rec.leaderboards["full"]["tuned"]["momentum"].problems == 2
