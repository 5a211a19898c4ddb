"""``descent bench --loop``: whole training loops, as users write them.

Each iteration is ``zero_grad``, forward, backward, step, on models where the step is a
large share of an iteration: a 50 M-param MLP at batch 4, an embedding-heavy model, a
wide MLP and a small transformer. Variants of the loop: ``zero_grad()`` (torch's default,
set_to_none), ``zero_grad(set_to_none=False)``, gradient accumulation over two
micro-batches, ``clip_grad_norm_`` before the step, and descent's step inside backward.
Contenders: descent and torch.optim's for-loop, foreach and fused (DeepSpeed's CPU Adam
where it installs), each in a process of its own, timed in alternated rounds one at a
time (median ms/iteration and spread); peak memory is each contender's own fresh
process's peak resident set (``VmHWM``) running the same loop, so no contender's buffers
count against another.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from unittest import mock

import torch
from torch import nn

from .bench import make, warm_kernels

LOOP_CONTENDERS = ("descent", "torch-forloop", "torch-foreach", "torch-fused", "deepspeed")
VARIANTS = ("set_to_none", "keep_grads", "accumulate", "clip", "in_backward")


def _mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


class _Embedding(nn.Module):
    def __init__(self, vocab: int = 50_000, dim: int = 256):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.emb(x).mean(1))


def _transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)


#: name → (model maker, input maker): the step matters in each (small batch or big params)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Generator], torch.Tensor]]] = {
    "mlp-50M": (lambda: _mlp(2048, 12), lambda g: torch.randn(4, 2048, generator=g)),
    "embedding-13M": (_Embedding, lambda g: torch.randint(0, 50_000, (32, 16), generator=g)),
    "wide-mlp-17M": (
        lambda: nn.Sequential(nn.Linear(1024, 8192), nn.ReLU(), nn.Linear(8192, 1024)),
        lambda g: torch.randn(8, 1024, generator=g),
    ),
    "transformer-3M": (_transformer, lambda g: torch.randn(2, 32, 256, generator=g)),
}


def iteration(model: nn.Module, opt, x: torch.Tensor, variant: str) -> None:
    """One training iteration of ``variant``."""
    if variant == "in_backward":  # the step runs inside backward; no zero_grad, no step
        model(x).float().pow(2).mean().backward()
        return
    opt.zero_grad(set_to_none=variant != "keep_grads")
    if variant == "accumulate":
        half = x.shape[0] // 2
        for part in (x[:half], x[half:]):
            (model(part).float().pow(2).mean() / 2).backward()
    else:
        model(x).float().pow(2).mean().backward()
    if variant == "clip":
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def build(model_name: str, impl: str, key: str, variant: str, seed: int = 0):
    """The model (seeded), its optimizer, and one input batch."""
    make_model, make_input = MODELS[model_name]
    torch.manual_seed(seed)
    model = make_model()
    if variant == "in_backward" and not impl.startswith("descent"):
        raise NotImplementedError("descent's step inside backward only")
    opt = make(impl, key, list(model.parameters()))
    if variant == "in_backward":
        from . import step_in_backward

        step_in_backward(model, opt)
    return model, opt, make_input(torch.Generator().manual_seed(seed))


@dataclass
class LoopRow:
    model: str
    params: int
    variant: str
    impl: str
    median_ms: float | None
    min_ms: float | None = None
    max_ms: float | None = None
    speedup_vs_torch_fused: float | None = None
    peak_rss_mb: float | None = None
    rss_vs_torch_fused_mb: float | None = None
    note: str = ""


@dataclass
class LoopReport:
    device: str
    torch: str
    date: str
    python: str
    threads: int
    rounds: int
    optimizer: str
    rows: list[LoopRow] = field(default_factory=list)


def run_loop(
    models: Sequence[str],
    variants: Sequence[str] = VARIANTS,
    impls: Sequence[str] = LOOP_CONTENDERS,
    key: str = "adam",
    rounds: int = 7,
    memory: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> LoopReport:
    for name in models:
        if name not in MODELS:
            raise ValueError(f"Unknown model {name!r}; choose from: {', '.join(MODELS)}")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"Unknown loop variant {v!r}; choose from: {', '.join(VARIANTS)}")
    report = LoopReport(
        device=f"cpu: {platform.processor() or platform.machine()}",
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        rounds=rounds,
        optimizer=key,
    )
    warm_kernels(key, torch.device("cpu"), torch.float32, log, impls)
    for name in models:
        base = None  # torch fused in the default loop: what the step inside backward is held against
        for variant in variants:
            rows = _time(name, variant, impls, key, rounds, log)
            if memory:
                for r in rows:
                    if r.median_ms is not None:
                        r.peak_rss_mb = peak_rss(name, r.impl, key, variant)
            fused = next((r for r in rows if r.impl == "torch-fused" and r.median_ms), None) or base
            if variant == "set_to_none":
                base = fused
            _compare(rows, fused)
            for r in rows:
                log(_line(r))
            report.rows += rows
    return report


def _worker(conn, name: str, impl: str, key: str, variant: str, threads: int) -> None:
    """One contender's loop in a process of its own: built, warmed, then timed ``k``
    iterations at a time on request."""
    torch.set_num_threads(threads)
    try:
        model, opt, x = build(name, impl, key, variant)
        for _ in range(3):  # state allocated, kernels loaded, caches warm
            iteration(model, opt, x, variant)
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        conn.send(("error", str(exc).split("\n")[0][:80]))
        return
    conn.send(("ready", None))
    while (k := conn.recv()) is not None:
        t0 = time.perf_counter()
        for _ in range(k):
            iteration(model, opt, x, variant)
        conn.send(("time", time.perf_counter() - t0))


def _time(
    name: str, variant: str, impls: Sequence[str], key: str, rounds: int, log, batch_s: float = 0.2
) -> list[LoopRow]:
    """ms/iteration of each contender, each in a process of its own (its allocator's
    history is its own loop's, as in a user's process: freed memory of another model
    would otherwise serve its allocations without page faults, measured to halve an
    iteration of ``embedding-13M``; the step inside backward may also set the process's
    mmap threshold). The contenders run in alternated rounds, one at a time.

    Which worker is started first moves the numbers (transformer-3M with clipping, the
    two alone: 0.90× for the one started first, a tie the other way round), so half the
    rounds run with the workers started in the list's order and half with a new set
    started in reverse, and each contender's rounds are pooled."""
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    first = (rounds + 1) // 2
    for order, part in ((list(impls), first), (list(reversed(impls)), rounds - first)):
        if part:
            _session(name, variant, [i for i in order if i not in notes], key, part, batch_s, times, notes)
    params = sum(p.numel() for p in MODELS[name][0]().parameters())
    out = []
    for impl in impls:
        if impl in notes:
            out.append(LoopRow(name, params, variant, impl, None, note=notes[impl]))
        elif times.get(impl):
            ts = times[impl]
            out.append(LoopRow(name, params, variant, impl, statistics.median(ts), min(ts), max(ts)))
    return out


def _session(
    name: str,
    variant: str,
    impls: Sequence[str],
    key: str,
    rounds: int,
    batch_s: float,
    times: dict[str, list[float]],
    notes: dict[str, str],
) -> None:
    """Start a worker per contender, in ``impls``' order, and time ``rounds`` alternated
    rounds of them into ``times``; a contender that cannot run gets its reason in
    ``notes``."""
    ctx = multiprocessing.get_context("spawn")
    workers: dict[str, tuple] = {}
    # (the workers inherit the environment: kernels were built before timing)
    with mock.patch.dict(os.environ, {"DESCENT_BUILD": "0"}), contextlib.ExitStack() as done:
        done.callback(_stop, workers)
        for impl in impls:
            here, there = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(there, name, impl, key, variant, torch.get_num_threads()), daemon=True
            )
            proc.start()
            kind, value = here.recv() if here.poll(600) else ("error", "no answer")
            if kind == "ready":
                workers[impl] = (proc, here)
            else:
                notes[impl] = value
                times.pop(impl, None)
                proc.join(5)
        per_batch = {}
        for impl, (_, conn) in workers.items():
            conn.send(1)
            per_batch[impl] = max(1, int(batch_s / max(conn.recv()[1], 1e-6)))
        names = list(workers)
        for r in range(rounds):
            for impl in names[r % len(names) :] + names[: r % len(names)]:
                conn, k = workers[impl][1], per_batch[impl]
                conn.send(k)
                times.setdefault(impl, []).append(conn.recv()[1] / k * 1e3)


def _stop(workers: dict[str, tuple]) -> None:
    for proc, conn in workers.values():
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def _compare(rows: list[LoopRow], fused: LoopRow | None) -> None:
    if fused is None:
        return
    for r in rows:
        if r.median_ms:
            r.speedup_vs_torch_fused = fused.median_ms / r.median_ms
        if r.peak_rss_mb is not None and fused.peak_rss_mb is not None:
            r.rss_vs_torch_fused_mb = r.peak_rss_mb - fused.peak_rss_mb


_PEAK = r"""
import json, sys
import torch
from descent import bench_loop as b
from descent.bench import peak_rss_mb
name, impl, key, variant = sys.argv[1:5]
model, opt, x = b.build(name, impl, key, variant)
for _ in range(5):
    b.iteration(model, opt, x, variant)
print(json.dumps(peak_rss_mb()))
"""


def peak_rss(name: str, impl: str, key: str, variant: str) -> float | None:
    """Peak resident memory (MB) of a fresh process running 5 iterations of the loop."""
    env = {**os.environ, "DESCENT_BUILD": "0"}  # kernels were built before timing
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, name, impl, key, variant], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def _line(r: LoopRow) -> str:
    if r.median_ms is None:
        return f"{r.model:15s} {r.variant:12s} {r.impl:14s} n/a ({r.note})"
    speed = f"{r.speedup_vs_torch_fused:5.2f}×" if r.speedup_vs_torch_fused else "    -"
    mem = f"{r.peak_rss_mb:8.0f} MB" if r.peak_rss_mb is not None else "        -"
    diff = f" ({r.rss_vs_torch_fused_mb:+.0f})" if r.rss_vs_torch_fused_mb is not None else ""
    return (
        f"{r.model:15s} {r.variant:12s} {r.impl:14s} {r.median_ms:9.2f} ms [{r.min_ms:.2f}–{r.max_ms:.2f}]"
        f" {speed} {mem}{diff}"
    )


def format_table(report: LoopReport) -> str:
    head = (
        f"descent bench --loop — {report.device}, torch {report.torch}, {report.threads} threads, "
        f"{report.date}; {report.optimizer}; ms/iteration, median of {report.rounds} alternated rounds "
        "[min–max], × torch fused (the step inside backward: × torch fused's default loop), "
        "peak RSS of a fresh process (vs torch fused)"
    )
    return "\n".join([head, ""] + [_line(r) for r in report.rows])


def to_json(report: LoopReport) -> str:
    return json.dumps(asdict(report), indent=1)
