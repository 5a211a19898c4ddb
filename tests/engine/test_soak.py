"""Soak: long runs with an lr that changes every step and a param group added midway keep
resident memory flat and load no new kernels once warmed up."""

from __future__ import annotations

import gc
import math
import os

import pytest
import torch

import descent
from descent.engine import kernels

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _soak(model: torch.nn.Module, steps: int, extra: torch.nn.Module, cls, **kw):
    params = list(model.parameters())
    opt = cls(params, lr=1e-3, compile=True, **kw)
    gen = torch.Generator().manual_seed(0)
    every = params + list(extra.parameters())
    grads = [[torch.randn(p.shape, generator=gen) * 1e-3 for p in every] for _ in range(4)]
    marks = {}
    half = steps // 2
    for step in range(steps):
        if step == half:
            opt.add_param_group({"params": list(extra.parameters())})
            params += list(extra.parameters())
        for p, g in zip(params, grads[step % 4]):
            p.grad = g.clone() if step % 3 == 0 else p.grad.copy_(g) if p.grad is not None else g.clone()
        for i, group in enumerate(opt.param_groups):  # a schedule that moves every step
            group["lr"] = (1e-3 / (i + 1)) * (1.5 + math.sin(step / 50))
        opt.step()
        if step in (steps // 10, half - 1, half + steps // 10, steps - 1):
            marks[step] = (_rss(), dict(kernels.stats), len(kernels._kernels))
    return [marks[k] for k in sorted(marks)], opt


@pytest.mark.parametrize(
    "name, steps, width",
    [("small", 10_000, 16), ("1M", 2_000, 1000)],
)
def test_long_runs_keep_memory_flat_and_load_no_new_kernels(name, steps, width):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Linear(width, 4))
    extra = torch.nn.Linear(width, 3)
    (w0, warm0, k0), (w1, warm1, k1), (w2, warm2, k2), (w3, warm3, k3) = _soak(
        model, steps, extra, descent.AdamW, weight_decay=0.01
    )[0]
    # before the new group, and after it (it brings its own state), memory is flat
    assert w1 <= w0 * 1.01, f"{name}: RSS grew {w1 / w0 - 1:.2%} over the first half"
    assert w3 <= w2 * 1.01, f"{name}: RSS grew {w3 / w2 - 1:.2%} over the second half"
    # and no kernel is built, loaded or compiled again once a half is warm
    for a, b in ((warm0, warm1), (warm2, warm3)):
        assert (a["built"], a["loaded"]) == (b["built"], b["loaded"])
    assert k0 == k1 and k2 == k3
    assert warm3["compiled_calls"] > warm0["compiled_calls"]
