"""Run a function on N gloo ranks on this CPU and collect what each rank returns.

One ``torch.multiprocessing`` spawn per call (each process pays for importing torch), a
``file://`` rendezvous in a temporary directory (no port to race for), and results
handed back through ``torch.save`` files. A rank that raises reports the traceback; a
run that does not finish within ``timeout`` seconds is killed and reported.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class RanksFailed(RuntimeError):
    pass


def _entry(rank: int, world: int, init: str, out: str, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)  # two ranks on a small shared CPU
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120)
    )
    try:
        result = {"ok": fn(rank, world, *args)}
    except BaseException:
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_ranks(fn: Callable, args: tuple = (), world: int = 2, timeout: float = 300) -> list:
    """``fn(rank, world, *args)`` on ``world`` processes in one process group; the list of
    what each rank returned (``fn`` must be importable: a module-level function)."""
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        ctx = mp.start_processes(
            _entry, args=(world, init, tmp, fn, args), nprocs=world, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    raise RanksFailed(f"ranks did not finish within {timeout:.0f} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        out = []
        for rank in range(world):
            res = torch.load(Path(tmp) / f"rank{rank}.pt", weights_only=False)
            if "error" in res:
                raise RanksFailed(f"rank {rank} raised:\n{res['error']}")
            out.append(res["ok"])
        return out


def result(ranks: list, key: str, rank: int = 0) -> dict:
    res = ranks[rank][key]
    if "error" in res:
        raise AssertionError(f"{key} raised on rank {rank}:\n{res['error']}")
    return res


def worst_error(got, want) -> float:
    """Largest |got − want| over each tensor, relative to that tensor's largest |want|."""
    assert len(got) == len(want)
    out = 0.0
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        out = max(out, ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item())
    return out
