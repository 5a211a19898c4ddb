"""``descent bench --formats``: Adam's state formats side by side.

For each model size (the GPT-style layouts of ``--sizes``) and each contender: bytes of
optimizer state per param, ms/step with the gradients in place, and the peak memory of
the process that ran it. Contenders:

- ``torch-fused``: ``torch.optim.AdamW(fused=True)``, float32 state (8 bytes a param);
- ``descent-f32``, ``descent-bf16``, ``descent-8bit``: ``descent.AdamW`` with
  ``state_dtype=None``, ``"bfloat16"`` and ``"8bit"`` (kernels built before timing);
- ``torchao-8bit`` (``torchao.optim.AdamW8bit``) and ``bnb-8bit``
  (``bitsandbytes.optim.Adam8bit``), where they install and run on this device (the row
  says why not otherwise).

Every contender runs alone, in a process of its own (so the peak memory is its own and
a slow peer does not share the machine with the others), on the same params and
gradients; it takes a few warm-up steps (a compile, where a peer compiles, is timed
separately as its first step) and then timed batches of steps, of which the median and
spread are reported with the speedup over ``torch-fused``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from .bench import peak_rss_mb
from .bench_sizes import SIZES, numel

CONTENDERS = ("torch-fused", "descent-f32", "descent-bf16", "descent-8bit", "torchao-8bit", "bnb-8bit")
DEFAULT_SIZES = ("6.6M", "51M")


@dataclass
class FormatRow:
    size: str
    params: int
    impl: str
    state_bytes_per_param: float | None = None
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    first_step_s: float | None = None
    peak_rss_mb: float | None = None
    speedup_vs_torch_fused: float | None = None
    note: str = ""


@dataclass
class FormatsReport:
    device: str
    torch: str
    date: str
    threads: int
    rounds: int
    load: str
    rows: list[FormatRow] = field(default_factory=list)


def _make(impl: str, params: list) -> torch.optim.Optimizer:
    if impl == "torch-fused":
        return torch.optim.AdamW(params, lr=1e-3, fused=True)
    if impl.startswith("descent-"):
        import descent

        fmt = {"f32": None, "bf16": "bfloat16", "8bit": "8bit"}[impl.split("-", 1)[1]]
        return descent.AdamW(params, lr=1e-3, state_dtype=fmt, compile=True)
    if impl == "torchao-8bit":
        from torchao.optim import AdamW8bit

        return AdamW8bit(params, lr=1e-3)
    if impl == "bnb-8bit":
        from bitsandbytes.optim import Adam8bit

        return Adam8bit(params, lr=1e-3)
    raise ValueError(f"Unknown contender {impl!r}; choose from: {', '.join(CONTENDERS)}")


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (views of one buffer counted once
    per element they cover; a peer's tensor subclass by its inner tensors)."""
    total = 0
    for st in opt.state.values():
        for k, v in st.items():
            if k == "step" or not isinstance(v, torch.Tensor):
                continue
            inner = getattr(v, "__tensor_flatten__", None)
            if inner is not None and type(v) is not torch.Tensor:
                names, _ = v.__tensor_flatten__()
                total += sum(getattr(v, n).numel() * getattr(v, n).element_size() for n in names)
            else:
                total += v.numel() * v.element_size()
    return total


def measure(impl: str, size: str, rounds: int, steps: int) -> dict:
    """One contender alone (run in a child process by :func:`run_formats`)."""
    shapes = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = _make(impl, params)
    start = time.perf_counter()
    opt.step()
    first = time.perf_counter() - start
    for _ in range(2):
        opt.step()
    if impl.startswith("descent-"):
        # grads into descent's flat buffer, as its loop keeps them (after the first step:
        # before it, the optimizer has no buffers to hold them in)
        opt.zero_grad(set_to_none=False)
        again = torch.Generator().manual_seed(0)  # the same values again, one at a time
        for s in shapes:
            torch.randn(s, generator=again)
        for p in params:
            p.grad.copy_(torch.randn(p.shape, generator=again) * 1e-3)
    _steady()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        times.append((time.perf_counter() - start) * 1e3 / steps)
    return {"bytes": _state_bytes(opt), "times": times, "first": first, "peak_mb": peak_rss_mb()}


def _steady() -> None:
    """Start the peak-memory count at the steady state: the setup's transients (params
    copied into flat buffers, the first gradients replaced by the flat buffer's) are not
    the step's, and memory freed by then goes back to the system first (where the C
    library can say so), so each contender's peak is what its steps hold."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size


def _child(impl: str, size: str, rounds: int, steps: int, timeout: float) -> dict:
    code = (
        "import json, sys; from descent.bench_formats import measure; "
        f"print('RESULT', json.dumps(measure({impl!r}, {size!r}, {rounds}, {steps})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    err = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": err[:160]}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_formats(
    sizes: Sequence[str] = DEFAULT_SIZES,
    impls: Sequence[str] = CONTENDERS,
    rounds: int = 5,
    steps: int = 5,
    timeout: float = 600,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> FormatsReport:
    for s in sizes:
        if s not in SIZES:
            raise ValueError(f"Unknown size {s!r}; choose from: {', '.join(SIZES)}")
    for impl in impls:
        if impl not in CONTENDERS:
            raise ValueError(f"Unknown contender {impl!r}; choose from: {', '.join(CONTENDERS)}")
    report = FormatsReport(
        device=f"cpu: {platform.processor() or platform.machine()}",
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        threads=torch.get_num_threads(),
        rounds=rounds,
        load=_load(),
    )
    for size in sizes:
        n = numel(SIZES[size])
        base = None
        for impl in impls:
            # the peers are slow on the CPU: fewer, shorter rounds
            peer = impl in ("torchao-8bit", "bnb-8bit")
            res = _child(impl, size, 2 if peer else rounds, 1 if peer else steps, timeout)
            if "error" in res:
                row = FormatRow(size, n, impl, note=res["error"])
            else:
                ts = res["times"]
                row = FormatRow(
                    size,
                    n,
                    impl,
                    state_bytes_per_param=res["bytes"] / n,
                    median_ms=statistics.median(ts),
                    min_ms=min(ts),
                    max_ms=max(ts),
                    first_step_s=res["first"],
                    peak_rss_mb=res["peak_mb"],
                )
                if impl == "torch-fused":
                    base = row.median_ms
            report.rows.append(row)
            log(_line(row))
        for row in report.rows:
            if row.size == size and base and row.median_ms:
                row.speedup_vs_torch_fused = base / row.median_ms
    report.load += f" → {_load()}"
    return report


def _line(r: FormatRow) -> str:
    if r.median_ms is None:
        return f"{r.size:5s} {r.impl:13s} n/a ({r.note})"
    speed = f"{r.speedup_vs_torch_fused:.2f}×" if r.speedup_vs_torch_fused else "-"
    return (
        f"{r.size:5s} {r.impl:13s} {r.state_bytes_per_param:6.2f} B/param {r.median_ms:9.2f} ms "
        f"[{r.min_ms:.2f}–{r.max_ms:.2f}] {speed:>6s}  first step {r.first_step_s:6.2f} s  "
        f"peak {r.peak_rss_mb:7.0f} MB"
    )


def format_table(report: FormatsReport) -> str:
    head = (
        f"descent bench --formats — {report.device}, torch {report.torch}, {report.threads} threads, "
        f"{report.date}; load {report.load}; AdamW, gradients in place; median of {report.rounds} rounds"
    )
    return "\n".join([head, "", *(_line(r) for r in report.rows)])


def to_json(report: FormatsReport) -> str:
    return json.dumps(asdict(report), indent=1)
