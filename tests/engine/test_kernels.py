"""The compiled kernel and the eager path give the same bits, for every optimizer.

This is what lets a step run eagerly while its kernel is still being built: the
numbers of a run never depend on when the kernel arrived. Each case runs the same
params, gradients (some None) and a moving learning rate through ``compile=True`` and
``compile=False`` and compares params and every state tensor with ``torch.equal``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import descent
from descent.engine import kernels

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import DEFAULTS, SHAPES, case_id, feed, groups  # noqa: E402

pytestmark = pytest.mark.compiled

#: Every transform and every option of one (Prepare's maximize and L2, Descend's
#: decoupled decay, ε inside the root, Nesterov, centered, AMSGrad, RAdam's two phases).
COVER = [
    *DEFAULTS,
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1, "maximize": True}),
    ("SGD", {"lr": 0.1}),
    ("Adam", {"eps_inside": True, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.2}),
    ("NAdam", {"decoupled_weight_decay": True, "weight_decay": 0.1, "momentum_decay": math.inf}),
    # beyond torch.optim: a chain ending in its own step (Schedule-Free), a paced first step (ADOPT)
    ("AdamWScheduleFree", {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5}),
    ("SGDScheduleFree", {"lr": 0.1, "weight_decay": 0.1}),
    ("ADOPT", {"weight_decay": 0.1, "decouple": True, "maximize": True}),
]
LOW = [c for c in DEFAULTS if c[0] in ("SGD", "Adam", "Adagrad")]
DOUBLE = [c for c in DEFAULTS if c[0] in ("Adam", "RMSprop", "RAdam", "Adadelta")]
STEPS = 40


def _pair(name, kw, dtype, **engine):
    gen = torch.Generator().manual_seed(0)
    shapes = [*SHAPES, (300, 41)]
    init = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    ref = [torch.nn.Parameter(x.clone()) for x in init]
    cls = getattr(descent, name)
    opts = cls(groups(ours), compile=True, **kw, **engine), cls(groups(ref), compile=False, **kw)
    for opt in opts:
        if hasattr(opt, "train"):  # Schedule-Free: training mode
            opt.train()
    return (ours, ref, *opts)


def _run(ours, ref, opt, eager):
    gen = torch.Generator().manual_seed(1)
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS // 2) for o in (opt, eager)]
    before = kernels.stats["compiled_calls"]
    for step in range(STEPS):
        feed(ours, ref, step, gen)
        opt.step()
        eager.step()
        for s in scheds:
            s.step()
    assert kernels.stats["compiled_calls"] > before  # the kernel really ran
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    mine, theirs = opt.state_dict()["state"], eager.state_dict()["state"]
    assert mine.keys() == theirs.keys()
    for pid, st in theirs.items():
        for key, value in st.items():
            assert torch.equal(mine[pid][key], value), (pid, key)


@pytest.mark.parametrize("case", COVER, ids=[case_id(c) for c in COVER])
def test_kernel_equals_eager_float32(case):
    _run(*_pair(*case, torch.float32))


@pytest.mark.parametrize("case", DOUBLE, ids=[case_id(c) for c in DOUBLE])
def test_kernel_equals_eager_float64(case):
    _run(*_pair(*case, torch.float64))


@pytest.mark.parametrize("case", LOW, ids=[case_id(c) for c in LOW])
def test_kernel_equals_eager_bfloat16(case):
    """Half precisions are computed in float32 and stored rounded, on both paths."""
    _run(*_pair(*case, torch.bfloat16))


def test_per_tensor_kernel_equals_flat_eager():
    """flat=False runs each param (channels-last included) through the same kernel as a
    1-D run over its memory: the same bits as the flat eager path."""
    gen = torch.Generator().manual_seed(0)
    init = [
        torch.randn(4, 3, 5, 5, generator=gen).to(memory_format=torch.channels_last),
        torch.randn(64, 33, generator=gen),
        torch.randn(7, generator=gen),
    ]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    ref = [torch.nn.Parameter(x.clone()) for x in init]
    opt = descent.Adam(ours, compile=True, flat=False, weight_decay=0.1)
    eager = descent.Adam(ref, compile=False, weight_decay=0.1)
    _run(ours, ref, opt, eager)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
