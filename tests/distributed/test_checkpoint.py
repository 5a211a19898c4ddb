"""torch.distributed.checkpoint with descent under FSDP2: get_optimizer_state_dict and
dcp.save on 2 ranks at step 5; a new model and optimizer (other initial weights) load it
with dcp.load and set_optimizer_state_dict on 2 ranks, or in one process with no process
group, and train on: they end where the uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch
from dist_harness import result, worst_error
from dist_scenarios import DCP_OPTIMIZERS, dcp_resume_one_process


@pytest.mark.parametrize("name", DCP_OPTIMIZERS)
def test_dcp_save_two_ranks_load_two_ranks(ranks, name):
    for rank in range(len(ranks)):
        res = result(ranks, f"dcp/{name}", rank)
        for resumed, uninterrupted in zip(res["resumed"], res["params"]):
            assert torch.equal(resumed, uninterrupted)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize("name", DCP_OPTIMIZERS)
def test_dcp_save_two_ranks_load_one_process(ranks, reference, ckpt_dir, name):
    uninterrupted = result(ranks, f"dcp/{name}")["params"]
    resumed = dcp_resume_one_process(name, f"{ckpt_dir}/{name}")
    # the same steps; only the order of the gradient's sums differs from the 2-rank run
    assert worst_error(resumed, uninterrupted) <= 1e-12
    assert worst_error(resumed, reference(name)) <= 1e-5
