"""``descent bench --sizes``: the step at every model size, against torch.optim's best.

Layouts are those of small GPT-style transformers (embedding; per block two LayerNorms,
QKV and output projections, a 4× MLP, with biases; a final LayerNorm), from one 1,024-
element tensor to 51 M parameters in 51 tensors. For each optimizer and size every
contender gets its own copy of the same params and gradients:

- ``descent``: built as a user builds it (``descent.Adam(params)``, every default);
- ``descent-rebuilt``: a second descent optimizer built over params an earlier one
  already re-homed (a notebook cell run twice, a second training phase);
- ``torch-forloop``, ``torch-foreach``, ``torch-fused``: torch.optim's three paths.

The contenders step in alternated rounds (the order rotates each round), each round
timing a batch of steps long enough to read the clock well; reported are the median
ms/step over the rounds and their spread (min–max), and descent's speedup over torch's
best median. Kernels are built before timing (``descent warmup``'s path), so the table
measures the kernel; the first step of a fresh process, with the kernel cache cold and
warm, is measured separately.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .bench import OPTIMIZERS, _sync


def transformer(d: int, layers: int, vocab: int) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    block = [
        (d,),
        (d,),
        (3 * d, d),
        (3 * d,),
        (d, d),
        (d,),
        (d,),
        (d,),
        (4 * d, d),
        (4 * d,),
        (d, 4 * d),
        (d,),
    ]
    for _ in range(layers):
        shapes += block
    return [*shapes, (d,), (d,)]


SIZES: dict[str, list[tuple[int, ...]]] = {
    "1K": [(1024,)],
    "104K": transformer(64, 2, 64),
    "611K": transformer(128, 3, 128),
    "2.4M": transformer(256, 3, 256),
    "6.6M": transformer(512, 2, 512),
    "51M": transformer(1024, 4, 1024),
}

CONTENDERS = ("descent", "descent-rebuilt", "torch-forloop", "torch-foreach", "torch-fused")


@dataclass
class Row:
    optimizer: str
    size: str
    params: int
    tensors: int
    impl: str
    median_ms: float | None
    min_ms: float | None = None
    max_ms: float | None = None
    speedup_vs_torch_best: float | None = None
    note: str = ""


@dataclass
class SizesReport:
    device: str
    torch: str
    date: str
    python: str
    threads: int
    rounds: int
    rows: list[Row] = field(default_factory=list)
    first_step: list[dict] = field(default_factory=list)


def numel(shapes: Sequence[tuple[int, ...]]) -> int:
    return sum(int(torch.Size(s).numel()) for s in shapes)


def _params(shapes, device, dtype, seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, device=device, dtype=dtype, generator=gen))
        p.grad = torch.randn(s, device=device, dtype=dtype, generator=gen) * 1e-3
        out.append(p)
    return out


def make(impl: str, key: str, params: list) -> torch.optim.Optimizer:
    cls, torch_name, kw = OPTIMIZERS[key]
    if impl == "descent":
        return cls(params, **kw)
    if impl == "descent-rebuilt":
        cls(params, **kw).step()  # an earlier optimizer re-homes the params and steps once
        return cls(params, **kw)
    if torch_name is None:
        raise NotImplementedError("torch.optim has no such optimizer")
    variants = {
        "torch": {},  # torch.optim's own default path, as a user builds it
        "torch-forloop": {"foreach": False},
        "torch-foreach": {"foreach": True},
        "torch-fused": {"fused": True},
    }
    return getattr(torch.optim, torch_name)(params, **kw, **variants[impl])


def race(
    steps: dict[str, Callable[[], object]], device: torch.device, rounds: int, batch_s: float = 0.02
) -> dict[str, list[float]]:
    """ms/step of each contender in ``rounds`` alternated rounds (order rotated)."""
    names = list(steps)
    per_batch = {}
    for name in names:  # calibrate: steps per batch so a batch lasts about batch_s
        _sync(device)
        t0 = time.perf_counter()
        steps[name]()
        _sync(device)
        per_batch[name] = max(1, int(batch_s / max(time.perf_counter() - t0, 1e-6)))
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, k = steps[name], per_batch[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            _sync(device)
            out[name].append((time.perf_counter() - t0) / k * 1e3)
    return out


def run_sizes(
    optimizers: Sequence[str],
    sizes: Sequence[str],
    impls: Sequence[str] = CONTENDERS,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    rounds: int = 7,
    first_step: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> SizesReport:
    import datetime
    import platform

    from .engine import cache

    dev = torch.device(device)
    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(OPTIMIZERS)}")
    for s in sizes:
        if s not in SIZES:
            raise ValueError(f"Unknown size {s!r}; choose from: {', '.join(SIZES)}")
    for impl in impls:
        if impl not in CONTENDERS:
            raise ValueError(f"Unknown contender {impl!r}; choose from: {', '.join(CONTENDERS)}")
    report = SizesReport(
        device=f"{dev.type}: "
        + (
            torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        rounds=rounds,
    )
    for key in optimizers:
        cls, _, kw = OPTIMIZERS[key]
        probe = cls([torch.nn.Parameter(torch.zeros(1, device=dev))], compile=False, **kw)
        built = cache.warmup([probe], [dtype], dev.type, log=lambda s: log("  kernel " + s))
        if built.failed:
            log(f"{key}: its kernel failed to build; descent's rows run eagerly")
        for size in sizes:
            shapes = SIZES[size]
            report.rows += _measure(key, size, shapes, impls, dev, dtype, rounds, log)
    if first_step:
        for key in optimizers:
            for i, size in enumerate(sizes):
                # the cold path (eager steps, a background build) is the same at every size
                rows = first_step_times(key, size, dev, cold=i == 0)
                report.first_step += rows
                for f in rows:
                    ms = f["seconds"] * 1e3
                    log(f"first step {key:8s} {size:5s} {f['impl']:8s} {f['cache']:4s} {ms:9.1f} ms")
    return report


def _measure(key, size, shapes, impls, dev, dtype, rounds, log) -> list[Row]:
    steps, rows = {}, []
    holders = []
    for impl in impls:
        params = _params(shapes, dev, dtype)
        try:
            opt = make(impl, key, params)
            for _ in range(3):  # state allocated, grads in place, caches warm
                opt.step()
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            rows.append(
                Row(key, size, numel(shapes), len(shapes), impl, None, note=str(exc).split("\n")[0][:80])
            )
            continue
        holders.append((opt, params))
        steps[impl] = opt.step
    times = race(steps, dev, rounds)
    del holders, steps
    gc.collect()
    for impl, ts in times.items():
        rows.append(Row(key, size, numel(shapes), len(shapes), impl, statistics.median(ts), min(ts), max(ts)))
    best = min((r.median_ms for r in rows if r.impl.startswith("torch") and r.median_ms), default=None)
    for r in rows:
        if best and r.median_ms:
            r.speedup_vs_torch_best = best / r.median_ms
        if r.median_ms:
            log(
                f"{key:8s} {size:5s} {r.impl:16s} {r.median_ms:9.3f} ms  [{r.min_ms:.3f}–{r.max_ms:.3f}]"
                + (f"  {r.speedup_vs_torch_best:5.2f}× torch best" if r.speedup_vs_torch_best else "")
            )
    return rows


FIRST_STEP = r"""
import json, os, sys, time
import torch
import descent.bench_sizes as b
from descent.engine import kernels
key, size, impl, device = sys.argv[1:5]
params = b._params(b.SIZES[size], torch.device(device), torch.float32)
t0 = time.perf_counter()
opt = b.make(impl, key, params)
opt.step()
b._sync(torch.device(device))
first = time.perf_counter() - t0
steps, until = 1, None
if impl == "descent" and os.environ.get("DESCENT_BENCH_FOLLOW"):
    deadline = time.monotonic() + 600
    while kernels.stats["compiled_calls"] == 0 and time.monotonic() < deadline:
        opt.step()
        steps += 1
    until = time.perf_counter() - t0
print(json.dumps({"seconds": first, "kernel_after_s": until, "eager_steps": kernels.stats["eager_calls"]}))
"""


def first_step_times(key: str, size: str, device: torch.device, cold: bool = True) -> list[dict]:
    """Construction + first step in fresh processes (torch imported beforehand): torch.optim
    built with its defaults, descent with its kernel cache warm, and (``cold``) descent
    with an empty cache, whose first steps run eagerly while the kernel builds in the
    background; that process steps on until the kernel is in use and says when."""
    runs = [("descent", "warm", {})]
    if OPTIMIZERS[key][1] is not None:
        runs.insert(0, ("torch", "-", {}))
    if cold:
        runs.append(("descent", "cold", {"DESCENT_BENCH_FOLLOW": "1"}))
    out = []
    with tempfile.TemporaryDirectory() as empty:
        for impl, cache_state, extra in runs:
            env = {**os.environ, "DESCENT_BUILD": "1", **extra}
            if cache_state == "cold":
                env["DESCENT_CACHE_DIR"] = empty
            proc = subprocess.run(
                [sys.executable, "-c", FIRST_STEP, key, size, impl, str(device)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append({"optimizer": key, "size": size, "impl": impl, "cache": cache_state, **res})
    return out


def format_table(report: SizesReport) -> str:
    lines = [
        f"descent bench --sizes — {report.device}, torch {report.torch}, {report.threads} threads, "
        f"{report.date}; median of {report.rounds} alternated rounds [min–max]",
        "",
    ]
    for r in report.rows:
        if r.median_ms is None:
            lines.append(f"{r.optimizer:9s} {r.size:5s} {r.impl:16s} n/a ({r.note})")
            continue
        speed = f"{r.speedup_vs_torch_best:.2f}×" if r.speedup_vs_torch_best else "-"
        lines.append(
            f"{r.optimizer:9s} {r.size:5s} {r.impl:16s} {r.median_ms:9.3f} ms [{r.min_ms:.3f}–{r.max_ms:.3f}]"
            f" {speed:>7s}"
        )
    if report.first_step:
        lines += ["", "first step in a fresh process (construction + step):"]
        for f in report.first_step:
            extra = f", kernel in use after {f['kernel_after_s']:.1f} s" if f.get("kernel_after_s") else ""
            lines.append(
                f"  {f['optimizer']:9s} {f['size']:5s} {f['impl']:8s} cache {f['cache']:4s} "
                f"{f['seconds'] * 1e3:9.1f} ms{extra}"
            )
    return "\n".join(lines)


def to_json(report: SizesReport) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(report), indent=1)
