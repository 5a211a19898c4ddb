"""``descent bench --fsdp`` runs end to end on 2 gloo ranks (a tiny model, one round) and
reports a row per contender; its arguments are checked before any process starts."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from descent import bench_dist
from descent.cli.main import main


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")
def test_fsdp_bench_rows():
    report = bench_dist.run_fsdp(
        ["sgd"], ["descent", "torch-foreach", "torch-fused"], rounds=2, n_blocks=2, width=8, warm=False
    )
    assert (report.ranks, report.backend) == (2, "gloo")
    assert (report.tensors, report.params) == (8, 2 * (8 * 8 + 8 * 3))
    assert [(r.optimizer, r.impl) for r in report.rows] == [
        ("sgd", "descent"),
        ("sgd", "torch-foreach"),
        ("sgd", "torch-fused"),
    ]
    foreach = report.rows[1]
    assert foreach.median_ms > 0 and foreach.min_ms <= foreach.median_ms <= foreach.max_ms
    assert foreach.speedup_vs_torch_best == pytest.approx(1.0)  # torch has no fused SGD for DTensor
    for r in report.rows:  # each row has a time or says why not
        assert (r.median_ms is None) == bool(r.note)
    table = bench_dist.format_table(report)
    assert "torch-foreach" in table and "8 param tensors" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fsdp", "--sizes", "1K"], "choose one of --fsdp, --sizes, --loop and --formats"),
        (["--fsdp", "--optimizers", "adamz"], "Unknown optimizer 'adamz'"),
        (["--fsdp", "--impls", "torch-turbo"], "Unknown contender 'torch-turbo'"),
    ],
)
def test_fsdp_bench_arguments(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
