"""``descent bench --fsdp``: the optimizer step under FSDP2, against torch.optim.

Two ranks (gloo on the CPU, one thread each; NCCL, one GPU each, where CUDA has two)
shard a stack of small blocks (Linear + LayerNorm, 4 param tensors each) with
``fully_shard`` per block and on the root, so every param is a DTensor holding its rank's
shard. Each contender (descent as a user builds it; torch.optim's foreach and fused paths)
gets its own sharded copy of the same model, gradients from one backward, and a few
warm steps; then only ``opt.step()`` is timed. The contenders step in alternated rounds
(the order rotates each round; the ranks start each round together), and a round counts
as long as its slower rank took. Reported per optimizer: median ms/step over the rounds,
the spread (min–max), and the speedup over torch's best median.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .bench import MAKERS, OPTIMIZERS, make, race, warm_kernels

FSDP_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
FSDP_CONTENDERS = ("descent", "torch-foreach", "torch-fused")
BLOCKS, WIDTH, BATCH = 40, 256, 16


@dataclass
class FsdpRow:
    optimizer: str
    impl: str
    median_ms: float | None
    min_ms: float | None = None
    max_ms: float | None = None
    speedup_vs_torch_best: float | None = None
    note: str = ""


@dataclass
class FsdpReport:
    device: str
    torch: str
    date: str
    python: str
    ranks: int
    backend: str
    threads_per_rank: int
    tensors: int
    params: int
    rounds: int
    rows: list[FsdpRow] = field(default_factory=list)


def blocks(n: int = BLOCKS, width: int = WIDTH) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width)) for _ in range(n)))


def _sharded(device: torch.device, n: int, width: int) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    model = blocks(n, width).to(device)
    for block in model:
        fully_shard(block)
    fully_shard(model)
    x = torch.randn(BATCH, width, device=device, generator=torch.Generator(device).manual_seed(1))
    model(x).square().mean().backward()  # the grads every timed step reads
    return model


def _rank(rank: int, world: int, init: str, out: str, spec: dict) -> None:
    import torch.distributed as dist

    cuda = spec["backend"] == "nccl"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(spec["threads"])
    dist.init_process_group(spec["backend"], init_method=init, rank=rank, world_size=world)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if rank == 0 else (lambda s: None)
    results: dict[str, dict[str, list[float] | str]] = {}
    try:
        for key in spec["optimizers"]:
            results[key] = _contend(key, spec, device, log)
    finally:
        if rank == 0:
            Path(out).write_text(json.dumps(results))
        dist.destroy_process_group()


def _contend(key: str, spec: dict, device: torch.device, log) -> dict[str, list[float] | str]:
    import torch.distributed as dist

    steps: dict[str, Callable[[], object]] = {}
    out: dict[str, list[float] | str] = {}
    keep = []
    for impl in spec["impls"]:
        model = _sharded(device, spec["blocks"], spec["width"])
        try:
            opt = make(impl, key, list(model.parameters()))
            for _ in range(3):  # state allocated, caches warm
                opt.step()
            failed = None
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            failed = str(exc).strip().split("\n")[0][:80] or type(exc).__name__
        # a contender runs only where it runs on every rank
        flag = torch.tensor([failed is not None], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            out[impl] = failed or "failed on another rank"
            continue
        keep.append((opt, model))
        steps[impl] = opt.step
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(spec["rounds"]):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        dist.barrier()
        part = race({n: steps[n] for n in order}, device, 1)
        # a round lasts as long as its slower rank
        t = torch.tensor([part[n][0] for n in names], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        for n, ms in zip(names, t.tolist()):
            times[n].append(ms)
    for n in names:
        ts = times[n]
        log(f"{key:8s} {n:14s} {statistics.median(ts):9.3f} ms  [{min(ts):.3f}–{max(ts):.3f}]")
    out.update(times)
    del keep, steps
    gc.collect()
    return {impl: out[impl] for impl in spec["impls"]}


def run_fsdp(
    optimizers: Sequence[str] = FSDP_OPTIMIZERS,
    impls: Sequence[str] = FSDP_CONTENDERS,
    rounds: int = 7,
    n_blocks: int = BLOCKS,
    width: int = WIDTH,
    device: str | torch.device = "cpu",
    warm: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> FsdpReport:
    """Time ``opt.step()`` of each optimizer under FSDP2 on 2 ranks (see the module doc)."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(OPTIMIZERS)}")
    for impl in impls:
        if impl not in MAKERS:
            raise ValueError(f"Unknown contender {impl!r}; choose from: {', '.join(MAKERS)}")
    dev = torch.device(device)
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    world = 2
    if dev.type == "cuda":
        if torch.cuda.device_count() < world:
            raise RuntimeError(f"--fsdp on cuda needs {world} GPUs (one per rank)")
        backend, threads = "nccl", torch.get_num_threads()
        name = torch.cuda.get_device_name(0)
    else:
        backend, threads = "gloo", max(1, (os.cpu_count() or world) // world)
        name = platform.processor() or platform.machine()
    probe = blocks(n_blocks, width)
    report = FsdpReport(
        device=f"{dev.type}: {name}",
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        python=platform.python_version(),
        ranks=world,
        backend=backend,
        threads_per_rank=threads,
        tensors=len(list(probe.parameters())),
        params=sum(p.numel() for p in probe.parameters()),
        rounds=rounds,
    )
    del probe
    spec = {
        "optimizers": list(optimizers),
        "impls": list(impls),
        "rounds": rounds,
        "blocks": n_blocks,
        "width": width,
        "backend": backend,
        "threads": threads,
    }
    for key in optimizers if warm else ():  # built here once; both ranks find them cached
        warm_kernels(key, dev, torch.float32, log)
    log(f"FSDP2 on {world} {backend} ranks: {report.tensors} tensors, {report.params:,} params")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        init = "file://" + os.path.join(tmp, "rendezvous")
        mp.start_processes(_rank, args=(world, init, out, spec), nprocs=world, start_method="spawn")
        times = json.loads(Path(out).read_text())
    for key in optimizers:
        rows = [
            FsdpRow(key, impl, None, note=ts)
            if isinstance(ts, str)
            else FsdpRow(key, impl, statistics.median(ts), min(ts), max(ts))
            for impl, ts in times[key].items()
        ]
        best = min((r.median_ms for r in rows if r.impl.startswith("torch") and r.median_ms), default=None)
        for r in rows:
            if best and r.median_ms:
                r.speedup_vs_torch_best = best / r.median_ms
        report.rows += rows
    return report


def format_table(report: FsdpReport) -> str:
    lines = [
        f"descent bench --fsdp — {report.device}, torch {report.torch}, "
        f"{report.ranks} {report.backend} ranks × {report.threads_per_rank} threads, {report.date}",
        f"FSDP2: {report.tensors} param tensors, {report.params:,} params, fully_shard per block + root; "
        f"opt.step() median of {report.rounds} alternated rounds [min–max], slower rank per round",
        "",
    ]
    for r in report.rows:
        if r.median_ms is None:
            lines.append(f"{r.optimizer:9s} {r.impl:14s} n/a ({r.note})")
            continue
        speed = f"{r.speedup_vs_torch_best:.2f}×" if r.speedup_vs_torch_best else "-"
        lines.append(
            f"{r.optimizer:9s} {r.impl:14s} {r.median_ms:9.3f} ms [{r.min_ms:.3f}–{r.max_ms:.3f}] {speed:>7s}"
        )
    return "\n".join(lines)


def to_json(report: FsdpReport) -> str:
    return json.dumps(asdict(report), indent=1)
