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

import datetime
import json
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from .bench import MAKERS, OPTIMIZERS, contend, first_steps, format_first_step, warm_kernels


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
#: with fresh gradients every step (a rebuilt optimizer reads them the same way)
FRESH_CONTENDERS = ("descent", "torch-forloop", "torch-foreach", "torch-fused", "deepspeed")


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
    #: "in place" (the optimizer's own buffer) or "fresh every step" (zero_grad's loop)
    grads: str = "in place"
    rows: list[Row] = field(default_factory=list)
    first_step: list[dict] = field(default_factory=list)


def numel(shapes: Sequence[tuple[int, ...]]) -> int:
    return sum(int(torch.Size(s).numel()) for s in shapes)


def run_sizes(
    optimizers: Sequence[str],
    sizes: Sequence[str],
    impls: Sequence[str] = CONTENDERS,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    rounds: int = 7,
    first_step: bool = True,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
    fresh: bool = False,
) -> SizesReport:
    dev = torch.device(device)
    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {key!r}; choose from: {', '.join(OPTIMIZERS)}")
    for s in sizes:
        if s not in SIZES:
            raise ValueError(f"Unknown size {s!r}; choose from: {', '.join(SIZES)}")
    for impl in impls:
        if impl not in MAKERS:
            raise ValueError(f"Unknown contender {impl!r}; choose from: {', '.join(MAKERS)}")
    name = (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    )
    report = SizesReport(
        device=f"{dev.type}: {name}",
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        python=platform.python_version(),
        threads=torch.get_num_threads(),
        rounds=rounds,
        grads="fresh every step" if fresh else "in place",
    )
    for key in optimizers:
        warm_kernels(key, dev, dtype, log)
        for size in sizes:
            times = contend(key, SIZES[size], impls, dev, dtype, rounds, fresh=fresh)
            report.rows += _rows(key, size, times, log)
    if first_step:
        for key in optimizers:
            report.first_step += first_steps(key, [(s, SIZES[s]) for s in sizes], dev, log)
    return report


def _rows(key: str, size: str, times: dict, log: Callable[[str], None]) -> list[Row]:
    shapes = SIZES[size]
    rows = [
        Row(key, size, numel(shapes), len(shapes), impl, None, note=ts)
        if isinstance(ts, str)
        else Row(key, size, numel(shapes), len(shapes), impl, statistics.median(ts), min(ts), max(ts))
        for impl, ts in times.items()
    ]
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


def format_table(report: SizesReport) -> str:
    lines = [
        f"descent bench --sizes — {report.device}, torch {report.torch}, {report.threads} threads, "
        f"{report.date}; gradients {report.grads}; median of {report.rounds} alternated rounds [min–max]",
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
    return "\n".join(lines + format_first_step(report.first_step))


def to_json(report: SizesReport) -> str:
    return json.dumps(asdict(report), indent=1)
