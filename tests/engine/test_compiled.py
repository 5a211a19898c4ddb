"""The compiled engine: torch.optim's numbers in float64, one kernel for schedules, new
groups, partial runs and other sizes, and bit-identical resumes in a fresh process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import descent
from descent.engine import kernels

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from optim_cases import DEFAULTS, case_id, feed, make_pair, rel_err  # noqa: E402

pytestmark = pytest.mark.compiled


IN_TORCH = [c for c in DEFAULTS if hasattr(torch.optim, c[0])]


@pytest.mark.parametrize("case", IN_TORCH, ids=[case_id(c) for c in IN_TORCH])
def test_compiled_engine_matches_torch_in_float64(case):
    """The parity suite's check on the compiled path: params and state within 1e-10."""
    name, kw = case
    ours, theirs, opt, ref = make_pair(name, kw, compile=True)
    gen = torch.Generator().manual_seed(1)
    calls = kernels.stats["compiled_calls"]
    for step in range(200):
        feed(ours, theirs, step, gen)
        opt.step()
        ref.step()
    assert kernels.stats["compiled_calls"] > calls
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-10
    for (_, sa), (_, sb) in zip(opt.state_dict()["state"].items(), ref.state_dict()["state"].items()):
        for key in sb:
            assert rel_err(sa[key], sb[key]) <= 1e-10, key


def test_one_kernel_serves_schedules_groups_partial_runs_and_sizes():
    p = [torch.nn.Parameter(torch.randn(1000)), torch.nn.Parameter(torch.randn(37))]
    opt = descent.Adam(p, compile=True)
    for x in p:
        x.grad = torch.randn_like(x)
    opt.step()  # warm-up: loads (or builds) the kernel
    known, loaded, calls = len(kernels._kernels), kernels.stats["loaded"], kernels.stats["compiled_calls"]

    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=50)  # lr and betas move
    for _ in range(20):
        opt.step()
        sched.step()
    extra = torch.nn.Parameter(torch.randn(5000))
    extra.grad = torch.randn(5000)
    opt.add_param_group({"params": [extra], "lr": 0.1, "betas": (0.8, 0.9)})
    opt.step()
    p[0].grad = None  # a run that covers part of a bucket
    opt.step()
    other = [torch.nn.Parameter(torch.randn(77777))]  # another model, another size
    other[0].grad = torch.randn(77777)
    descent.Adam(other, compile=True, lr=0.5).step()

    assert kernels.stats["compiled_calls"] >= calls + 24
    assert len(kernels._kernels) == known
    assert kernels.stats["loaded"] == loaded


CHECKPOINT_SCRIPT = r"""
import sys, torch, descent
phase, folder, compile_ = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
for name, kw in eval(sys.argv[4]):
    path = f"{folder}/{name}.pt"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = getattr(descent, name)(model.parameters(), compile=compile_, **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5, gamma=0.7)
    data = torch.randn(20, 32, 6, generator=torch.Generator().manual_seed(1))
    start = 0
    if phase == "resume":
        ckpt = torch.load(path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        start = ckpt["step"]
    for step in range(start, 20):
        if phase == "first" and step == 10:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step}, path)
        opt.zero_grad()
        model(data[step]).pow(2).mean().backward()
        opt.step()
        sched.step()
    torch.save([p.detach().clone() for p in model.parameters()], path + "." + phase)
"""


@pytest.mark.parametrize("compile_", [False, True], ids=["flat-eager", "flat-compiled"])
def test_checkpoint_resumed_in_a_fresh_process_is_bit_identical(tmp_path, compile_):
    """Save model, optimizer and scheduler mid-run, resume in a new process: the
    trajectory equals the uninterrupted one bit for bit."""
    import subprocess

    script = tmp_path / "run.py"
    script.write_text(CHECKPOINT_SCRIPT)
    cases = DEFAULTS if not compile_ else [c for c in DEFAULTS if c[0] in ("Adam", "SGD", "NAdam")]
    for phase in ("first", "resume"):
        subprocess.run(
            [sys.executable, str(script), phase, str(tmp_path), "1" if compile_ else "0", repr(cases)],
            check=True,
        )
    for name, _ in cases:
        first = torch.load(tmp_path / f"{name}.pt.first")
        resumed = torch.load(tmp_path / f"{name}.pt.resume")
        assert len(first) == 4
        for a, b in zip(first, resumed):
            assert torch.equal(a, b), name
