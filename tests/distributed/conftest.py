"""The distributed tests share one run: 2 gloo ranks, started once per session, run every
scenario of ``dist_scenarios`` in sequence (a process pays seconds to import torch; the
scenarios take milliseconds each). The single-process references run in this process."""

from __future__ import annotations

import functools

import pytest
import torch.distributed as dist


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dcp"))


@pytest.fixture(scope="session")
def ranks(ckpt_dir):
    """Per rank: scenario key → what the scenario returned (or ``{"error": traceback}``)."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    import dist_harness
    import dist_scenarios

    return dist_harness.run_ranks(dist_scenarios.run_all, (ckpt_dir,), world=2, timeout=600)


@pytest.fixture(scope="session")
def reference():
    import dist_scenarios

    return functools.cache(dist_scenarios.reference)
