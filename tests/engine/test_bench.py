"""``descent bench``: both tables run, every contender is timed in alternated rounds, and
bad input gets a clear error. Times are reported, never asserted."""

from __future__ import annotations

import json

import pytest
import torch

from descent import bench
from descent.cli.main import main as cli

pytestmark = pytest.mark.compiled


def test_size_sweep_times_every_contender(capsys):
    assert (
        cli(
            [
                "bench",
                "--sizes",
                "1K",
                "--optimizers",
                "sgd,lion",
                "--repeat",
                "3",
                "--no-first-step",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    rows = {(r["optimizer"], r["impl"]): r for r in report["rows"]}
    for impl in ("descent", "descent-rebuilt", "torch-forloop", "torch-foreach", "torch-fused"):
        r = rows[("sgd", impl)]
        assert r["params"] == 1024 and r["tensors"] == 1
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert rows[("sgd", "descent")]["speedup_vs_torch_best"] > 0
    assert rows[("lion", "descent")]["median_ms"] > 0
    assert rows[("lion", "torch-fused")]["median_ms"] is None  # torch.optim has no Lion
    assert report["rounds"] == 3


def test_layout_table_and_first_step(capsys):
    args = ["bench", "--optimizers", "adam", "--few", "2x4096", "--many", "40x64", "--repeat", "2"]
    assert cli([*args, "--no-first-step", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by = {(r["layout"], r["impl"]): r for r in report["results"]}
    assert by[("few-big", "descent")]["numel"] == 8192 and by[("many-small", "descent")]["tensors"] == 40
    assert all(r["ms"] > 0 and r["pct_copy"] > 0 for r in report["results"] if r["ms"])
    rows = bench.first_step_times("adam", "tiny", [(64,), (8, 8)], torch.device("cpu"), cold=False)
    assert [(r["impl"], r["cache"]) for r in rows] == [("torch", "-"), ("descent", "warm")]
    assert all(r["seconds"] > 0 for r in rows)


def test_formats_table_reports_state_bytes(capsys):
    args = ["bench", "--formats", "104K", "--impls", "torch-fused,descent-f32,descent-8bit", "--repeat", "2"]
    assert cli([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["impl"]: r for r in report["rows"]}
    assert rows["torch-fused"]["state_bytes_per_param"] == 8
    assert rows["descent-f32"]["state_bytes_per_param"] == 8
    assert rows["descent-8bit"]["state_bytes_per_param"] < 2.6  # small tensors stay float32
    assert all(r["median_ms"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--sizes", "3K"], "Unknown size '3K'"),
        (["--sizes", "1K", "--impls", "descent,torch-turbo"], "Unknown contender 'torch-turbo'"),
        (["--optimizers", "adamz"], "Unknown optimizer 'adamz'"),
        (["--few", "8by4"], "Invalid layout '8by4'"),
        (["--repeat", "0"], "Invalid --repeat 0"),
        (["--formats", "3K"], "Unknown size '3K'"),
        (["--formats", "1K", "--impls", "descent-4bit"], "Unknown contender 'descent-4bit'"),
        (["--formats", "--sizes"], "choose one of"),
    ],
)
def test_bad_input_is_named(argv, message, capsys):
    assert cli(["bench", "--no-first-step", *argv]) == 2
    assert message in capsys.readouterr().err


def test_matrix_rules_are_timed_against_torch(capsys):
    argv = ["bench", "--optimizers", "muon,adafactor", "--sizes", "104K", "--impls", "descent,torch,nope"]
    assert cli([*argv, "--repeat", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["optimizer"], r["impl"]): r for r in report["rows"]}
    assert rows[("muon", "descent")]["tensors"] == 9  # the 2-D matrices of the layout only
    assert rows[("adafactor", "torch")]["tensors"] == 27
    for key in ("muon", "adafactor"):
        r = rows[(key, "descent")]
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["speedup_vs_torch"] > 0
        assert rows[(key, "nope")]["median_ms"] is None and "Unknown contender" in rows[(key, "nope")]["note"]


def test_loop_contenders_are_timed_each_in_a_process_of_its_own(monkeypatch):
    """``descent bench --loop``: every contender runs in a worker process of its own; one
    that cannot run this loop says why, the others get their times."""
    import os

    from descent import bench_loop

    monkeypatch.setenv("DESCENT_BUILD", "1")
    rows = bench_loop._time("transformer-3M", "in_backward", ["descent", "torch-fused"], "adam", 2, print)
    by = {r.impl: r for r in rows}
    assert by["descent"].median_ms > 0 and by["descent"].min_ms <= by["descent"].max_ms
    assert by["torch-fused"].median_ms is None
    assert "descent's step inside backward only" in by["torch-fused"].note
    assert os.environ["DESCENT_BUILD"] == "1"  # the workers' "0" is not left behind


@pytest.mark.parametrize("numel,copies", [(1024, 2), (bench.TWICE_BELOW, 1)])
def test_small_layouts_race_each_contender_built_early_and_late(monkeypatch, numel, copies):
    """Below ``TWICE_BELOW`` elements every contender is built twice, in the list's order
    and then in reverse, and its rounds are both copies' together; a contender that
    cannot run is reported once, with its reason."""
    built: list[str] = []
    real_make = bench.make

    def make(impl, key, ps):
        built.append(impl)
        if impl == "torch-fused" and key == "rmsprop":
            raise TypeError("no fused RMSprop")
        return real_make(impl, key, ps)

    raced: list = []

    def race(steps, device, rounds, prepare=None):
        raced.extend(steps)
        return {name: [float(i)] * rounds for i, name in enumerate(steps)}

    monkeypatch.setattr(bench, "make", make)
    monkeypatch.setattr(bench, "race", race)

    def params(shapes, device, dtype):
        p = torch.nn.Parameter(torch.zeros(4))
        p.grad = torch.ones(4)
        return [p]

    monkeypatch.setattr(bench, "params", params)
    impls = ["descent", "torch-forloop", "torch-fused"]
    out = bench.contend("rmsprop", [(numel,)], impls, torch.device("cpu"), torch.float32, 3)
    want = ["descent", "torch-forloop", "torch-fused"] + (["torch-forloop", "descent"] if copies == 2 else [])
    assert built == want
    ran = ["descent", "torch-forloop"]
    assert raced == [(n, c) for c in range(copies) for n in (ran if c == 0 else ran[::-1])]
    assert out["torch-fused"] == "no fused RMSprop"
    for impl in ("descent", "torch-forloop"):
        assert len(out[impl]) == 3 * copies
        assert out[impl] == [t for c in range(copies) for t in [float(raced.index((impl, c)))] * 3]


def test_loop_workers_start_in_the_lists_order_for_half_the_rounds_and_in_reverse_for_the_rest(monkeypatch):
    from descent import bench_loop

    sessions: list = []

    def session(name, variant, impls, key, rounds, batch_s, times, notes):
        sessions.append((list(impls), rounds))
        for i, impl in enumerate(impls):
            if impl == "torch-foreach":
                notes[impl] = "cannot run"
                continue
            times.setdefault(impl, []).extend([float(10 * len(sessions) + i)] * rounds)

    monkeypatch.setattr(bench_loop, "_session", session)
    rows = bench_loop._time(
        "transformer-3M", "set_to_none", ["descent", "torch-foreach", "torch-fused"], "adam", 5, print
    )
    assert sessions == [(["descent", "torch-foreach", "torch-fused"], 3), (["torch-fused", "descent"], 2)]
    by = {r.impl: r for r in rows}
    assert by["torch-foreach"].median_ms is None and by["torch-foreach"].note == "cannot run"
    assert (by["descent"].min_ms, by["descent"].max_ms) == (10.0, 21.0)  # both sessions pooled
    assert (by["torch-fused"].min_ms, by["torch-fused"].max_ms) == (12.0, 20.0)
