"""ZeroRedundancyOptimizer(optimizer_class=descent.X) on 2 gloo ranks equals torch.optim's
X on the global batch in one process, with parameters_as_bucket_view False and True (on
this model rank 0 holds one param alone, so its bucket is exactly that param's size)."""

from __future__ import annotations

import pytest
from dist_harness import result, worst_error
from dist_scenarios import ZERO_OPTIMIZERS, ZERO_WIDTH

TOL = 1e-6


@pytest.mark.parametrize("view", [False, True], ids=["view0", "view1"])
@pytest.mark.parametrize("name", ZERO_OPTIMIZERS)
def test_zero_matches_one_process(ranks, reference, name, view):
    want = reference(name, ZERO_WIDTH)
    for rank in range(len(ranks)):
        err = worst_error(result(ranks, f"zero/{name}/view{int(view)}", rank)["params"], want)
        assert err <= TOL, f"rank {rank}: worst relative error {err:.2e}"
