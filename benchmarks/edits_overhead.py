"""What noticing the user's edits costs a step: descent's step as it is, against the same
step with every edit check switched off (``StateKeeper.edited`` answering "no edit",
``settle`` recording nothing, ``Bucket.host_edited`` answering "no", a group's param list
taken as unchanged). Alternated rounds in one process, median and spread.

    python benchmarks/edits_overhead.py            # 4,000 tensors of 1,024 and the 51 M layout
    python benchmarks/edits_overhead.py --rounds 15

Gradients stay in descent's flat buffer (``zero_grad(set_to_none=False)``), where the
checks are the largest share of a step.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import descent
from descent.bench_sizes import SIZES
from descent.engine import bucket, engine, state

LAYOUTS = {"4,000 × 1,024": [(1024,)] * 4000, "51 M (GPT layout)": SIZES["51M"]}


@contextlib.contextmanager
def unchecked():
    """The step without the edit checks (for timing only: edits are then ignored)."""
    saved = (
        state.StateKeeper.edited,
        state.StateKeeper.settle,
        bucket.Bucket.host_edited,
        engine._Group.holds,
    )
    state.StateKeeper.edited = lambda self, st: self._state is not st  # only the first step
    state.StateKeeper.settle = lambda self, st, buckets: setattr(self, "_state", st)
    bucket.Bucket.host_edited = lambda self: False
    engine._Group.holds = lambda self, group: group is self.group
    try:
        yield
    finally:
        (
            state.StateKeeper.edited,
            state.StateKeeper.settle,
            bucket.Bucket.host_edited,
            engine._Group.holds,
        ) = saved


def build(shapes):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = descent.Adam(ps, lr=1e-3)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()
    opt.zero_grad(set_to_none=False)  # gradients into descent's flat buffer from now on
    for p in ps:
        p.grad.normal_()
    opt.step()
    return opt


def timed(opt, checks: bool, budget: float = 0.2) -> float:
    ctx = contextlib.nullcontext() if checks else unchecked()
    with ctx:
        opt.step()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < budget:
            opt.step()
            n += 1
        return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Adam, grads in place")
    for name, shapes in LAYOUTS.items():
        opt = build(shapes)
        on, off = [], []
        for r in range(args.rounds):
            pair = [(on, True), (off, False)]
            for out, checks in pair if r % 2 == 0 else pair[::-1]:
                out.append(timed(opt, checks))
        a, b = statistics.median(on), statistics.median(off)
        print(
            f"{name:20s} with checks {a:8.3f} ms [{min(on):.3f}–{max(on):.3f}]   "
            f"without {b:8.3f} ms [{min(off):.3f}–{max(off):.3f}]   overhead {100 * (a / b - 1):+.1f} %"
        )


if __name__ == "__main__":
    main()
