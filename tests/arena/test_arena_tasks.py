"""The built-in tasks learn (a tuned Adam beats chance, computed here from the data), the
data regimes batch as the notes say, runs are reproducible, and the Task protocol
accepts a user's task by import path and rejects broken ones with a clear message."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from descent.arena import TaskError, builtin_names, resolve
from descent.arena.measure.train import RunSpec, init_worker, train
from descent.arena.tasks import check
from descent.arena.tasks.data import make_loader

ADAM_LRS = (3e-3, 1e-2, 3e-2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    init_worker()
    yield
    torch.set_num_threads(threads)


def _chance(task) -> float:
    """The metric of the best constant prediction, from the validation targets."""
    _, val = task.data()
    y = val.tensors[1].reshape(-1)
    if task.metric_name == "R²":
        return 0.0  # predicting the mean has R² = 0 by definition
    counts = torch.bincount(y.long())
    return (counts.max() / counts.sum()).item()


def test_the_six_builtin_tasks_exist():
    assert set(builtin_names()) == {
        "digits_mlp", "cancer_logreg", "sparse_logreg", "friedman_mlp", "digits_cnn", "chars_mlp"
    }  # fmt: skip
    tags = {t: set(resolve(t).tags) for t in builtin_names()}
    assert (
        "sparse" in tags["sparse_logreg"] and "sequence" in tags["chars_mlp"] and "cnn" in tags["digits_cnn"]
    )


@pytest.mark.parametrize("name", builtin_names())
def test_tuned_adam_beats_chance(name):
    task = resolve(name)
    chance = _chance(task)
    assert task.chance == pytest.approx(chance)
    runs = [train(RunSpec(name, "minibatch", "adam", lr=lr)) for lr in ADAM_LRS]
    best = min(runs, key=lambda r: r.score)
    metric = best.final.val_metric
    # well above chance: at least half-way from chance to perfect (R²: to 1)
    assert metric > chance + 0.5 * (1 - chance) * (0.5 if name == "friedman_mlp" else 1), (
        name,
        metric,
        chance,
    )
    assert task.reached(metric), f"{name}: tuned Adam does not reach the target {task.target} ({metric})"


def test_regimes_batch_as_the_notes_say():
    n = 10
    ds = TensorDataset(torch.arange(n).float().unsqueeze(1), torch.arange(n))
    full = make_loader(ds, "full", n, seed=0)
    for _ in range(2):
        (x, y), *rest = list(full)
        assert not rest and y.tolist() == list(range(n))  # every step sees every example
    mini = make_loader(ds, "minibatch", 4, seed=0)
    epochs = [[b[1].tolist() for b in mini] for _ in range(3)]
    for batches in epochs:  # shuffle, then partition: every example once per epoch
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(sum(batches, [])) == list(range(n))
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    again = make_loader(ds, "minibatch", 4, seed=0)
    assert [b[1].tolist() for b in again] == epochs[0]  # the seed fixes the order
    other = make_loader(ds, "minibatch", 4, seed=1)
    assert [b[1].tolist() for b in other] != epochs[0]
    sgd = make_loader(ds, "sgd", 1, seed=0)
    assert [len(b[1]) for b in sgd] == [1] * n


def test_a_run_is_reproducible():
    spec = RunSpec("cancer_logreg", "minibatch", "nadam", lr=1e-2, seed=3, steps=30)
    a, b = train(spec), train(spec)
    assert a.curve == b.curve and a.final == b.final
    c = train(RunSpec("cancer_logreg", "minibatch", "nadam", lr=1e-2, seed=4, steps=30))
    assert c.curve.val_loss != a.curve.val_loss


def test_user_task_by_import_path():
    task = resolve("arena_tiny_task:make")
    assert task.name == "blobs" and task.ref == "arena_tiny_task:make"
    facts = check(task)
    assert facts == {"n_train": 180, "n_val": 60, "n_params": 9}
    r = train(RunSpec("arena_tiny_task:make", "full", "adam", lr=0.1))
    assert r.steps == 12 and r.epochs == 12 and r.final.val_metric > 0.8


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_task", "Unknown task 'no_such_task'; choose from: digits_mlp"),
        ("no_such_module_xyz:make", "cannot import 'no_such_module_xyz'"),
        ("arena_tiny_task:nope", "has no attribute 'nope'"),
        ("arena_tiny_task:not_a_task", "returned int, not descent.arena.Task"),
        ("arena_tiny_task:", "expected 'package.module:factory'"),
    ],
)
def test_bad_task_specs_name_the_problem(spec, message):
    with pytest.raises(TaskError, match=message.replace("(", r"\(")):
        resolve(spec)


def test_a_task_that_does_not_run_fails_the_check():
    task = resolve("arena_tiny_task:broken")
    with pytest.raises(TaskError, match="Task 'broken' does not run: RuntimeError"):
        check(task)
