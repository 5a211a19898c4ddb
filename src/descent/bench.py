"""Step-time benchmarks: descent against torch.optim, measured in one run.

Each optimizer steps on two layouts ("few big tensors", "many small tensors") in each
implementation: descent as a user builds it (its compiled kernel), descent's eager path,
and torch.optim's for-loop, foreach and fused variants (where torch has them). The
contenders step in alternated rounds (the order rotates each round, so noise hits all
alike). Reported per case: median ms/step over the rounds and its spread, GB/s over the
minimal bytes a step must move (read p, g and the state, write p and the state), that as
a percentage of the copy bandwidth measured in the same run, and the speedup over
torch's best. First-step times come from fresh processes: torch.optim, descent with its
kernel cache warm, and descent with an empty cache.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from . import catalog

#: optimizer key → (descent class, torch.optim name or None, kwargs), from the catalog;
#: ``sgd`` steps with momentum (the catalog's ``momentum``), so it has state to move.
OPTIMIZERS: dict[str, tuple[type, str | None, dict]] = {
    key: (e.cls, e.torch.__name__ if e.torch else None, dict(e.fixed))
    for key, e in (
        (k, catalog.get("momentum" if k == "sgd" else k))
        for k in ("sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "amsgrad", "nadam", "adamax",
                  "radam", "lion")
    )
}  # fmt: skip

IMPLS = ("descent", "descent-eager", "torch-forloop", "torch-foreach", "torch-fused")

#: peers measured where they install (never a dependency of descent)
PEERS = ("deepspeed",)

#: descent with its state kept in a format (``state_dtype=``), by contender name
FORMATS = {"descent-bf16": "bfloat16", "descent-8bit": "8bit"}

#: every way a contender can be built (``make``)
MAKERS = (*IMPLS, "descent-rebuilt", *FORMATS, "torch", *PEERS)


@dataclass
class Layout:
    name: str
    count: int
    size: int

    @property
    def numel(self) -> int:
        return self.count * self.size

    @classmethod
    def parse(cls, name: str, spec: str) -> Layout:
        try:
            count, size = (int(x) for x in spec.lower().split("x"))
        except ValueError:
            raise ValueError(f"Invalid layout {spec!r}: expected COUNTxSIZE, e.g. 8x4194304") from None
        if count <= 0 or size <= 0:
            raise ValueError(f"Invalid layout {spec!r}: count and size must be positive")
        return cls(name, count, size)


def default_layouts(device: torch.device) -> list[Layout]:
    if device.type == "cuda":
        return [Layout("few-big", 259, 2_185_000), Layout("many-small", 10_000, 4096)]
    return [Layout("few-big", 8, 4 << 20), Layout("many-small", 4000, 1024)]


@dataclass
class Result:
    optimizer: str
    layout: str
    tensors: int
    numel: int
    impl: str
    ms: float | None
    bytes_per_param: int
    min_ms: float | None = None
    max_ms: float | None = None
    gbps: float | None = None
    pct_copy: float | None = None
    speedup_vs_torch_best: float | None = None
    note: str = ""


@dataclass
class Report:
    device: str
    torch: str
    date: str
    python: str
    threads: int
    copy_gbps: dict[str, float] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    first_step: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], None], device: torch.device, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(race({"x": fn}, device, repeat)["x"])


def race(
    steps: dict[Hashable, Callable[[], object]],
    device: torch.device,
    rounds: int,
    batch_s: float = 0.02,
    prepare: dict[Hashable, Callable[[], object]] | None = None,
) -> dict[Hashable, list[float]]:
    """ms/step of each contender over ``rounds`` alternated rounds (the order rotates);
    each round times a batch of steps lasting about ``batch_s``. ``prepare[name]`` runs
    before each of that contender's steps, outside the timing (fresh gradients)."""
    names = list(steps)
    prepare = prepare or {}
    per_batch = {}
    for name in names:
        per_batch[name] = max(1, int(batch_s / max(_timed(steps[name], prepare.get(name), 1, device), 1e-6)))
    out: dict[Hashable, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            k = per_batch[name]
            out[name].append(_timed(steps[name], prepare.get(name), k, device) / k * 1e3)
    return out


def _timed(fn: Callable[[], object], before: Callable[[], object] | None, k: int, device) -> float:
    """Seconds spent in ``k`` calls of ``fn`` (``before`` runs untimed ahead of each)."""
    if before is None:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        _sync(device)
        return time.perf_counter() - t0
    total = 0.0
    for _ in range(k):
        before()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        total += time.perf_counter() - t0
    return total


def copy_bandwidth(numel: int, device: torch.device, dtype: torch.dtype, repeat: int) -> float:
    """GB/s of ``dst.copy_(src)`` over ``numel`` elements (read + write)."""
    src = torch.randn(numel, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src), device, 3, repeat)
    return 2 * numel * src.element_size() / ms / 1e6


def bytes_per_param(key: str, element_size: int) -> int:
    """Minimal traffic of one step: read g, read and write p and every state buffer."""
    cls, _, kw = OPTIMIZERS[key]
    probe = cls([torch.nn.Parameter(torch.zeros(1))], **kw)
    return element_size * (3 + 2 * len(probe.chain(probe.param_groups[0]).state))


def peak_rss_mb() -> float:
    """This process's own high-water mark (ru_maxrss keeps the parent's across exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def params(shapes: Sequence[tuple[int, ...]], device: torch.device, dtype: torch.dtype) -> list:
    """Seeded params with gradients (the same for every contender)."""
    gen = torch.Generator(device=device).manual_seed(0)
    out = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, device=device, dtype=dtype, generator=gen))
        p.grad = torch.randn(shape, device=device, dtype=dtype, generator=gen) * 1e-3
        out.append(p)
    return out


def make(impl: str, key: str, params: list) -> torch.optim.Optimizer:
    """Build contender ``impl`` (one of :data:`MAKERS`) of optimizer ``key``."""
    cls, torch_name, kw = OPTIMIZERS[key]
    if impl == "descent":
        return cls(params, **kw)  # as a user builds it
    if impl == "descent-eager":
        return cls(params, compile=False, **kw)
    if impl == "descent-rebuilt":
        cls(params, **kw).step()  # an earlier optimizer re-homed the params and stepped
        return cls(params, **kw)
    if impl in FORMATS:
        return cls(params, state_dtype=FORMATS[impl], **kw)
    if impl == "deepspeed":
        return _deepspeed(key, params, kw)
    if torch_name is None:
        raise NotImplementedError("torch.optim has no such optimizer")
    variants = {
        "torch": {},
        "torch-forloop": {"foreach": False},
        "torch-foreach": {"foreach": True},
        "torch-fused": {"fused": True},
    }
    return getattr(torch.optim, torch_name)(params, **kw, **variants[impl])


def _deepspeed(key: str, params: list, kw: dict) -> torch.optim.Optimizer:
    """DeepSpeed's CPU Adam (C++ SIMD, reads gradients where they lie), for Adam/AdamW."""
    if key not in ("adam", "adamw") or params[0].device.type != "cpu":
        raise NotImplementedError("DeepSpeedCPUAdam: Adam/AdamW on the CPU only")
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as exc:  # not installed, or its op does not build here
        raise NotImplementedError(f"deepspeed unavailable ({type(exc).__name__})") from None
    decay = kw.get("weight_decay", 1e-2 if key == "adamw" else 0.0)
    return DeepSpeedCPUAdam(params, weight_decay=decay, adamw_mode=key == "adamw")


#: Below this many elements a layout's contenders are each built twice, in opposite
#: orders (see :func:`contend`); above it the steps are milliseconds long and the copies
#: would double the memory of the largest layouts.
TWICE_BELOW = 10_000_000


def contend(
    key: str,
    shapes: Sequence[tuple[int, ...]],
    impls: Sequence[str],
    device,
    dtype,
    rounds: int,
    fresh: bool = False,
) -> dict[str, list[float] | str]:
    """Per contender: ms/step of each alternated round, or why it could not run.
    ``fresh``: every step gets new gradient tensors, as after ``zero_grad()`` and backward
    (two sets alternate; assigning them is not timed).

    Microsecond steps depend on the order the contenders were built in (measured at 1 K
    params: whichever is built second steps up to 20 % faster, the mechanism unknown), so
    below :data:`TWICE_BELOW` elements each contender is built twice, once in the list's
    order and once in reverse, both copies race, and a contender's rounds are those of
    its two copies together."""
    copies = 2 if sum(int(torch.Size(s).numel()) for s in shapes) < TWICE_BELOW else 1
    steps: dict[tuple[str, int], Callable[[], object]] = {}
    prepare: dict[tuple[str, int], Callable[[], object]] = {}
    out: dict[str, list[float] | str] = {}
    keep = []
    for c in range(copies):
        for impl in impls if c == 0 else list(reversed(impls)):
            if impl in out:
                continue  # (it could not run)
            ps = params(shapes, device, dtype)
            try:
                opt = make(impl, key, ps)
                if fresh:
                    prepare[impl, c] = _fresh_grads(ps)
                for _ in range(3):  # state allocated, caches warm
                    if fresh:
                        prepare[impl, c]()
                    opt.step()
                if not fresh and impl.startswith("descent"):
                    _hold_grads(opt, ps)
            except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
                out[impl] = str(exc).split("\n")[0][:80]
                prepare.pop((impl, c), None)
                steps.pop((impl, 0), None)
                prepare.pop((impl, 0), None)
                continue
            keep.append((opt, ps))
            steps[impl, c] = opt.step
    times = race(steps, device, rounds, prepare=prepare)
    for impl in impls:
        if impl not in out:
            out[impl] = [t for c in range(copies) for t in times.get((impl, c), [])]
    del keep, steps, prepare
    gc.collect()
    return out


def _hold_grads(opt: torch.optim.Optimizer, ps: list) -> None:
    """Gradients in place, as a descent user gets them: ``zero_grad(set_to_none=False)``
    makes them views of one flat buffer (which backward then accumulates into), here
    refilled with the values every contender steps on."""
    grads = [p.grad.clone() for p in ps]
    opt.zero_grad(set_to_none=False)
    for p, g in zip(ps, grads):
        p.grad.copy_(g)


def _fresh_grads(ps: list) -> Callable[[], None]:
    """Assigns one of two sets of gradient tensors the optimizer has not been given the
    step before: what backward leaves after ``zero_grad()``."""
    gen = torch.Generator(device=ps[0].device).manual_seed(1)
    sets = [
        [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * 1e-3 for p in ps] for _ in "ab"
    ]
    turn = [0]

    def give() -> None:
        for p, g in zip(ps, sets[turn[0] % 2]):
            p.grad = g
        turn[0] += 1

    return give


def warm_kernels(
    key: str, device: torch.device, dtype: torch.dtype, log: Callable[[str], None], impls: Sequence[str] = ()
) -> None:
    """Build ``key``'s kernels before timing, so the tables measure the kernel (the first
    steps of a machine without it run eagerly while it builds); those of the state
    formats too where ``impls`` has a contender of :data:`FORMATS`."""
    from .engine import cache
    from .engine.formats import MIN_NUMEL

    cls, _, kw = OPTIMIZERS[key]
    probes = [cls([torch.nn.Parameter(torch.zeros(1, device=device))], compile=False, **kw)]
    for impl in impls:
        if impl in FORMATS:  # a param big enough for compact state
            p = torch.nn.Parameter(torch.zeros(MIN_NUMEL, device=device))
            probes.append(cls([p], compile=False, state_dtype=FORMATS[impl], **kw))
    summary = cache.warmup(probes, [dtype], device.type, log=lambda s: log("  kernel " + s))
    if summary.failed:
        log(f"{key}: its kernel failed to build; descent's rows run eagerly")


def run(
    optimizers: Sequence[str],
    layouts: Sequence[Layout],
    impls: Sequence[str] = IMPLS,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    repeat: int = 10,
    first_step: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Report:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(OPTIMIZERS)}")
    for impl in impls:
        if impl not in MAKERS:
            raise ValueError(f"Unknown implementation {impl!r}; choose from: {', '.join(MAKERS)}")
    name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    report = Report(
        device=f"{dev.type}: {name}",
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
    )
    for layout in layouts:
        report.copy_gbps[layout.name] = copy_bandwidth(layout.numel, dev, dtype, repeat)
        log(f"copy bandwidth over {layout.numel:,} elements: {report.copy_gbps[layout.name]:.1f} GB/s")
    elem = torch.empty((), dtype=dtype).element_size()
    for key in optimizers:
        warm_kernels(key, dev, dtype, log)
        per = bytes_per_param(key, elem)
        for layout in layouts:
            times = contend(key, [(layout.size,)] * layout.count, impls, dev, dtype, repeat)
            batch = []
            for impl, ts in times.items():
                base = (key, layout.name, layout.count, layout.numel, impl)
                if isinstance(ts, str):
                    batch.append(Result(*base, None, 0, note=ts))
                    log(f"{key:9s} {layout.name:10s} {impl:14s} n/a ({ts})")
                    continue
                ms = statistics.median(ts)
                batch.append(Result(*base, ms, per, min(ts), max(ts), layout.numel * per / ms / 1e6))
                log(f"{key:9s} {layout.name:10s} {impl:14s} {ms:9.3f} ms [{min(ts):.3f}–{max(ts):.3f}]")
            _finish(batch, report.copy_gbps[layout.name])
            report.results.extend(batch)
    if first_step:
        cases = [(layout.name, [(layout.size,)] * layout.count) for layout in layouts]
        for key in optimizers:
            report.first_step += first_steps(key, cases, dev, log)
    return report


def _finish(batch: list[Result], copy_gbps: float) -> None:
    torch_best = min((r.ms for r in batch if r.impl.startswith("torch") and r.ms), default=None)
    for r in batch:
        if r.ms is None:
            continue
        r.pct_copy = 100 * r.gbps / copy_gbps
        if torch_best:
            r.speedup_vs_torch_best = torch_best / r.ms


FIRST_STEP = r"""
import json, os, sys, time
import torch
import descent.bench as b
from descent.engine import kernels
key, impl, device, shapes = sys.argv[1], sys.argv[2], torch.device(sys.argv[3]), json.loads(sys.argv[4])
params = b.params([tuple(s) for s in shapes], device, torch.float32)
t0 = time.perf_counter()
opt = b.make(impl, key, params)
opt.step()
b._sync(device)
first = time.perf_counter() - t0
until = None
if os.environ.get("DESCENT_BENCH_FOLLOW"):  # step on until the kernel is in use
    deadline = time.monotonic() + 600
    while kernels.stats["compiled_calls"] == 0 and time.monotonic() < deadline:
        opt.step()
    until = time.perf_counter() - t0
print(json.dumps({"seconds": first, "kernel_after_s": until, "eager_steps": kernels.stats["eager_calls"]}))
"""


def first_step_times(
    key: str, label: str, shapes: Sequence[tuple[int, ...]], device: torch.device, cold: bool = True
) -> list[dict]:
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
                [sys.executable, "-c", FIRST_STEP, key, impl, str(device), json.dumps(list(shapes))],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append({"optimizer": key, "size": label, "impl": impl, "cache": cache_state, **res})
    return out


def format_table(report: Report) -> str:
    lines = [
        f"descent bench — {report.device}, torch {report.torch}, {report.threads} threads, {report.date}",
        "copy bandwidth: " + ", ".join(f"{k} {v:.1f} GB/s" for k, v in report.copy_gbps.items()),
        "",
        f"{'optimizer':10s} {'layout':10s} {'impl':14s} {'ms/step':>9s} {'GB/s':>7s} {'% copy':>7s}"
        f" {'vs torch best':>13s}",
    ]
    for r in report.results:
        if r.ms is None:
            lines.append(f"{r.optimizer:10s} {r.layout:10s} {r.impl:14s} {'n/a':>9s}   {r.note}")
            continue
        speed = f"{r.speedup_vs_torch_best:.2f}x" if r.speedup_vs_torch_best else "-"
        lines.append(
            f"{r.optimizer:10s} {r.layout:10s} {r.impl:14s} {r.ms:9.3f} {r.gbps:7.1f}"
            f" {r.pct_copy:6.0f}% {speed:>13s}"
        )
    return "\n".join(lines + format_first_step(report.first_step))


def first_steps(
    key: str,
    cases: Sequence[tuple[str, Sequence[tuple[int, ...]]]],
    device: torch.device,
    log: Callable[[str], None],
) -> list[dict]:
    """:func:`first_step_times` for each ``(label, shapes)``; the cold path (eager steps
    while the kernel builds) is the same at every size, so only the first case runs it."""
    out: list[dict] = []
    for i, (label, shapes) in enumerate(cases):
        rows = first_step_times(key, label, shapes, device, cold=i == 0)
        for line in format_first_step(rows)[2:]:
            log(line)
        out += rows
    return out


def format_first_step(rows: Sequence[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "first step in a fresh process (construction + step):"]
    for f in rows:
        extra = f", kernel in use after {f['kernel_after_s']:.1f} s" if f.get("kernel_after_s") else ""
        lines.append(
            f"  {f['optimizer']:9s} {f['size']:10s} {f['impl']:8s} cache {f['cache']:4s} "
            f"{f['seconds'] * 1e3:9.1f} ms{extra}"
        )
    return lines
