"""descent against torch.optim: every class, a spread of settings, params and every
state tensor after 200 steps of fresh random gradients."""

from __future__ import annotations

import pytest
import torch
from optim_cases import CASES, case_id, compare_state, feed, make_pair, rel_err

STEPS = 200
ENGINES = {"flat": {"flat": True, "compile": False}, "per-tensor": {"flat": False}}


@pytest.mark.parametrize("engine", list(ENGINES), ids=list(ENGINES))
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_matches_torch_float64(case, engine):
    name, kw = case
    ours, theirs, opt, ref = make_pair(name, kw, **ENGINES[engine])
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10
    compare_state(opt, ref, 1e-10)


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2), (torch.float16, 1e-2)], ids=str
)
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad", "NAdam", "Adadelta"])
def test_low_precision_tracks_torch(name, dtype, tol):
    kw = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01} if name != "Adadelta" else {}
    ours, theirs, opt, ref = make_pair(name, kw, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    for step in range(30):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype
        assert rel_err(a, b) <= tol
