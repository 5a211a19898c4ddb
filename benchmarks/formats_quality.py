"""Final validation loss of every arena task with Adam's state in float32, bfloat16 and
8-bit, over a few seeds: is a compact format within the seed spread of float32?

    python benchmarks/formats_quality.py [--seeds 3] [--regime minibatch] [--all-tensors]

Each (task, format, seed) is one arena run (``descent.arena.measure.train``: the task's
step budget, its default learning rate for Adam). ``--all-tensors`` quantizes every
tensor (the arena's models are small: most of their tensors are under the 4,096
elements below which state stays float32, so without it only a few are compact).
Prints a markdown table: per format the mean final validation loss, its min–max over
the seeds, and whether the mean lies within float32's min–max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from descent import catalog
from descent.arena.measure.train import RunSpec, train
from descent.arena.tasks import resolve
from descent.engine import formats

TASKS = ("digits_mlp", "cancer_logreg", "sparse_logreg", "friedman_mlp", "digits_cnn", "chars_mlp")
FORMATS = (None, "bfloat16", "8bit")


class _Stored:
    """A catalog entry whose optimizer keeps its state in ``fmt``."""

    def __init__(self, entry, fmt: str | None):
        self.entry, self.fmt = entry, fmt

    def __getattr__(self, name: str):
        return getattr(self.entry, name)

    def make(self, params, lr=None, **hyper):
        return self.entry.make(params, lr=lr, state_dtype=self.fmt, **hyper)


def final_losses(task: str, fmt: str | None, seeds: int, regime: str) -> list[float]:
    get = catalog.get
    catalog.get = lambda name: _Stored(get(name), fmt)
    try:
        runs = [train(RunSpec(task, regime, "adam", seed=seed)) for seed in range(seeds)]
    finally:
        catalog.get = get
    return [float("nan") if run.final is None else run.final.val_loss for run in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--regime", default="minibatch")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--all-tensors", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DESCENT_COMPILE", "0")  # eager: the same numbers, no kernel builds
    if args.all_tensors:
        formats.MIN_NUMEL = 0
    print(
        f"Adam, regime {args.regime}, {args.seeds} seeds, compact tensors: "
        f"{'all' if args.all_tensors else f'≥ {formats.MIN_NUMEL} elements'}\n"
    )
    print("| task | float32 | bfloat16 | 8-bit |")
    print("|---|---|---|---|")
    for task in args.tasks.split(","):
        resolve(task)  # fail early on a bad name
        cells, base = [], None
        for fmt in FORMATS:
            losses = final_losses(task, fmt, args.seeds, args.regime)
            mean = statistics.fmean(losses)
            lo, hi = min(losses), max(losses)
            if base is None:
                base = (lo, hi)
                cells.append(f"{mean:.4f} [{lo:.4f}–{hi:.4f}]")
            else:
                inside = "within" if base[0] <= mean <= base[1] else "outside"
                cells.append(f"{mean:.4f} [{lo:.4f}–{hi:.4f}] {inside}")
            print(f"  {task} {fmt}: {losses}", file=sys.stderr, flush=True)
        print(f"| {task} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
