"""Step-time benchmarks: descent against torch.optim, measured in one run.

Each optimizer steps on two layouts ("few big tensors", "many small tensors") in each
implementation: descent's compiled engine, descent's eager flat engine, and torch.optim's
for-loop, foreach and fused variants (where torch has them). Reported per case: median
ms/step after warm-up, GB/s over the minimal bytes a step must move (read p, g and the
state, write p and the state), that as a percentage of the copy bandwidth measured in
the same run, and the speedup over torch's best. First-step times (compilation
included, cold and warm inductor cache) come from fresh processes.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from . import optim

#: optimizer key → (descent class, torch.optim name or None, kwargs)
OPTIMIZERS: dict[str, tuple[type, str | None, dict]] = {
    "sgd": (optim.SGD, "SGD", {"lr": 1e-3, "momentum": 0.9}),
    "adagrad": (optim.Adagrad, "Adagrad", {}),
    "rmsprop": (optim.RMSprop, "RMSprop", {}),
    "adadelta": (optim.Adadelta, "Adadelta", {}),
    "adam": (optim.Adam, "Adam", {}),
    "adamw": (optim.AdamW, "AdamW", {}),
    "amsgrad": (optim.Adam, "Adam", {"amsgrad": True}),
    "nadam": (optim.NAdam, "NAdam", {}),
    "adamax": (optim.Adamax, "Adamax", {}),
    "radam": (optim.RAdam, "RAdam", {}),
    "lion": (optim.Lion, None, {}),
}

IMPLS = ("descent", "descent-eager", "torch-forloop", "torch-foreach", "torch-fused")


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
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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


def _params(layout: Layout, device: torch.device, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    gen = torch.Generator(device=device).manual_seed(0)
    out = []
    for _ in range(layout.count):
        p = torch.nn.Parameter(torch.randn(layout.size, device=device, dtype=dtype, generator=gen))
        p.grad = torch.randn(layout.size, device=device, dtype=dtype, generator=gen) * 1e-3
        out.append(p)
    return out


def _make(impl: str, key: str, params: list) -> torch.optim.Optimizer:
    cls, torch_name, kw = OPTIMIZERS[key]
    if impl == "descent":
        return cls(params, compile=True, **kw)
    if impl == "descent-eager":
        return cls(params, compile=False, **kw)
    if torch_name is None:
        raise NotImplementedError("torch.optim has no such optimizer")
    variant = {"torch-forloop": {"foreach": False}, "torch-foreach": {"foreach": True}}.get(
        impl, {"fused": True}
    )
    return getattr(torch.optim, torch_name)(params, **kw, **variant)


def time_case(
    key: str, layout: Layout, impl: str, device: torch.device, dtype: torch.dtype, warmup: int, repeat: int
) -> Result:
    elem = torch.empty((), dtype=dtype).element_size()
    params = _params(layout, device, dtype)
    try:
        opt = _make(impl, key, params)
        opt.step()  # state allocated, kernel compiled
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        return Result(
            key, layout.name, layout.count, layout.numel, impl, None, 0, note=str(exc).split("\n")[0][:80]
        )
    per = bytes_per_param(key, elem)
    ms = _median_ms(opt.step, device, warmup, repeat)
    del opt, params
    gc.collect()
    gbps = layout.numel * per / ms / 1e6
    return Result(key, layout.name, layout.count, layout.numel, impl, ms, per, gbps)


def run(
    optimizers: Sequence[str],
    layouts: Sequence[Layout],
    impls: Sequence[str] = IMPLS,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    warmup: int = 3,
    repeat: int = 10,
    first_step: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> Report:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(OPTIMIZERS)}")
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"Unknown implementation {impl!r}; choose from: {', '.join(IMPLS)}")
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
    for key in optimizers:
        for layout in layouts:
            batch = []
            for impl in impls:
                r = time_case(key, layout, impl, dev, dtype, warmup, repeat)
                log(
                    f"{key:9s} {layout.name:10s} {impl:14s} "
                    + (f"{r.ms:9.3f} ms" if r.ms else f"n/a ({r.note})")
                )
                batch.append(r)
            _finish(batch, report.copy_gbps[layout.name])
            report.results.extend(batch)
    if first_step:
        for key in optimizers:
            report.first_step.extend(first_step_times(key, layouts, dev))
    return report


def _finish(batch: list[Result], copy_gbps: float) -> None:
    torch_best = min((r.ms for r in batch if r.impl.startswith("torch") and r.ms), default=None)
    for r in batch:
        if r.ms is None:
            continue
        r.pct_copy = 100 * r.gbps / copy_gbps
        if torch_best:
            r.speedup_vs_torch_best = torch_best / r.ms


FIRST_STEP_SCRIPT = """
import sys, time, torch, descent.bench as b
key, count, size, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
dev = torch.device(device)
params = b._params(b.Layout("x", count, size), dev, torch.float32)
t0 = time.perf_counter()
opt = b._make("descent", key, params)
opt.step()
b._sync(dev)
print(time.perf_counter() - t0)
"""


def first_step_times(key: str, layouts: Sequence[Layout], device: torch.device) -> list[dict]:
    """Construction + first step (compilation included) in fresh processes, with an
    empty inductor cache (cold) and then with the cache it left (warm)."""
    out = []
    for layout in layouts:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            for label in ("cold", "warm"):
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        FIRST_STEP_SCRIPT,
                        key,
                        str(layout.count),
                        str(layout.size),
                        str(device),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                seconds = float(proc.stdout.strip().splitlines()[-1])
                out.append({"optimizer": key, "layout": layout.name, "cache": label, "seconds": seconds})
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
    if report.first_step:
        lines += ["", "first step (construction + compile), fresh process:"]
        for f in report.first_step:
            lines.append(f"  {f['optimizer']:10s} {f['layout']:10s} {f['cache']:5s} {f['seconds']:6.1f} s")
    return "\n".join(lines)
