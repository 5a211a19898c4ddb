"""FSDP2 (``fully_shard`` on each Linear and the root, or on the root alone) on 2 gloo
ranks: descent's optimizers equal torch.optim on the global batch in one process, and
keep their state sharded exactly as torch.optim does under FSDP2."""

from __future__ import annotations

import pytest
from dist_harness import result, worst_error
from dist_scenarios import FSDP_MODES, FSDP_ONLY_ROOT, OPTIMIZERS, SKIP_AT, SKIP_OPTIMIZERS, reference_impl

TOL = 1e-5

CASES = [(n, m) for n in OPTIMIZERS for m in FSDP_MODES if m != "root" or n in FSDP_ONLY_ROOT]
WITH_TORCH = [(n, m) for n, m in CASES if reference_impl(n) == "torch"]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_fsdp_matches_one_process(ranks, reference, name, mode):
    want = reference(name)
    for rank in range(len(ranks)):
        err = worst_error(result(ranks, f"fsdp/{name}/{mode}", rank)["params"], want)
        assert err <= TOL, f"rank {rank}: worst relative error {err:.2e}"


@pytest.mark.parametrize(("name", "mode"), WITH_TORCH)
def test_fsdp_torch_optim_matches_one_process(ranks, reference, name, mode):
    """The yardstick: torch.optim itself under the same FSDP2 run meets the same bound."""
    want = reference(name)
    for rank in range(len(ranks)):
        err = worst_error(result(ranks, f"fsdp-torch/{name}/{mode}", rank)["params"], want)
        assert err <= TOL, f"rank {rank}: worst relative error {err:.2e}"


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_fsdp_state_sharded(ranks, name, mode):
    """Every state tensor is a DTensor sharded like its param (same placements and local
    shape on each rank); where torch has the optimizer, each state entry has the kind,
    placements, shapes and dtype torch.optim gives it under FSDP2."""
    for rank in range(len(ranks)):
        res = result(ranks, f"fsdp/{name}/{mode}", rank)
        assert len(res["state"]) == len(res["param_layout"])
        for entry, (kind, placements, local_shape) in zip(res["state"], res["param_layout"]):
            assert kind == "DTensor"
            tensors = [v for v in entry.values() if v[0] == "DTensor"]
            assert tensors, f"no sharded state: {entry}"
            for v in tensors:
                assert (v[1], v[2]) == (placements, local_shape), (entry, placements, local_shape)
        if reference_impl(name) == "torch":
            assert res["state"] == result(ranks, f"fsdp-torch/{name}/{mode}", rank)["state"]


@pytest.mark.parametrize("name", SKIP_OPTIMIZERS)
def test_skip_nonfinite_skips_on_every_rank_when_one_shard_is_not_finite(ranks, reference, name):
    want = reference(name, skip=(SKIP_AT,))
    for rank in range(len(ranks)):
        got = result(ranks, f"fsdp-skip/{name}", rank)
        assert got["skipped"] == 1, f"rank {rank} skipped {got['skipped']} steps"
        err = worst_error(got["params"], want)
        assert err <= TOL, f"rank {rank}: worst relative error {err:.2e}"
