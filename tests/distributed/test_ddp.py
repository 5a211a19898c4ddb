"""DDP on 2 gloo ranks with descent's optimizers equals torch.optim on the global batch in
one process, with gradients as DDP's bucket views or not, no_sync() accumulation, and
grads cleared by opt.zero_grad(), opt.zero_grad(set_to_none=False) or model.zero_grad()."""

from __future__ import annotations

import pytest
from dist_harness import result, worst_error
from dist_scenarios import DDP_MODES, IN_BACKWARD_OPTIMIZERS, OPTIMIZERS

TOL = 1e-6


@pytest.mark.parametrize("mode", DDP_MODES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ddp_matches_one_process(ranks, reference, name, mode):
    want = reference(name)
    for rank in range(len(ranks)):
        err = worst_error(result(ranks, f"ddp/{name}/{mode}", rank)["params"], want)
        assert err <= TOL, f"rank {rank}: worst relative error {err:.2e}"


@pytest.mark.parametrize("mode", [m for m, (view, _, _) in DDP_MODES.items() if view])
def test_ddp_bucket_views_kept(ranks, mode):
    """With gradient_as_bucket_view=True each p.grad is a view of DDP's bucket; after
    opt.step() it still is (the step neither re-homes it nor copies it out)."""
    moved = {name: result(ranks, f"ddp/{name}/{mode}")["grads_moved"] for name in OPTIMIZERS}
    assert not any(moved.values()), f"grads moved out of DDP's bucket by opt.step(): {moved}"


@pytest.mark.parametrize("view", [0, 1])
@pytest.mark.parametrize("name", IN_BACKWARD_OPTIMIZERS)
def test_step_in_backward_under_ddp_matches_one_process(ranks, reference, name, view):
    """descent.step_in_backward(ddp_model, opt): each of DDP's gradient buckets is stepped
    once its all-reduce has averaged it; the result is the global-batch step's."""
    want = reference(name)
    for rank in range(len(ranks)):
        err = worst_error(result(ranks, f"ddp-in-backward/{name}/view{view}", rank)["params"], want)
        assert err <= TOL, f"rank {rank}: worst relative error {err:.2e}"
