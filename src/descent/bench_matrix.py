"""``descent bench --optimizers muon,adafactor``: the matrix rules against torch.optim's.

Layouts are ``bench_sizes``' GPT-like ones, and ``2000x64x64`` (2,000 matrices of
64 × 64). Muon steps the 2-D matrices of a layout
(what it is for: embeddings, biases and norms go to AdamW), Adafactor every tensor.
Contenders, each on its own copy of the same params and gradients, stepped in alternated
rounds (the order rotates each round); reported are the median ms/step over the rounds,
their spread (min–max) and descent's speedup over torch.optim:

- ``descent``: ``descent.Muon`` / ``descent.Adafactor`` (same-shape matrices batched);
- ``torch``: ``torch.optim.Muon`` (a Python loop, Newton–Schulz per matrix) /
  ``torch.optim.Adafactor`` with ``foreach=True`` (its faster path);
- ``heavyball``: heavyball's ``Muon`` where heavyball is installed (an optional
  contender; skipped, with the reason, where it is not).
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

from .bench import race
from .bench_sizes import SIZES, numel

MATRIX_OPTIMIZERS = ("muon", "adafactor")
MATRIX_CONTENDERS = ("descent", "torch", "heavyball")
MATRIX_SIZES = ("611K", "6.6M")
#: beyond the size sweep: many small matrices, where a Python loop per tensor costs most
LAYOUTS = {**SIZES, "2000x64x64": [(64, 64)] * 2000}


@dataclass
class MatrixRow:
    optimizer: str
    size: str
    params: int
    tensors: int
    impl: str
    median_ms: float | None
    min_ms: float | None = None
    max_ms: float | None = None
    speedup_vs_torch: float | None = None
    note: str = ""


@dataclass
class MatrixReport:
    device: str
    torch: str
    date: str
    threads: int
    rounds: int
    rows: list[MatrixRow] = field(default_factory=list)


def _make(impl: str, key: str, ps: list) -> torch.optim.Optimizer:
    import descent

    if impl == "descent":
        return descent.Muon(ps, lr=0.02) if key == "muon" else descent.Adafactor(ps)
    if impl == "torch":
        return torch.optim.Muon(ps, lr=0.02) if key == "muon" else torch.optim.Adafactor(ps, foreach=True)
    if impl == "heavyball":
        import heavyball  # an optional contender, never a dependency

        if key != "muon":
            raise RuntimeError("heavyball has no torch-compatible Adafactor here")
        return heavyball.Muon(ps, lr=0.02)
    raise ValueError(f"Unknown contender {impl!r}; choose from: {', '.join(MATRIX_CONTENDERS)}")


def _regrad(ps: list, gs: list) -> Callable[[], None]:
    def put() -> None:
        for p, g in zip(ps, gs):
            p.grad = g

    return put


def _shapes(key: str, size: str) -> list[tuple[int, ...]]:
    shapes = LAYOUTS[size]
    return [s for s in shapes if len(s) == 2] if key == "muon" else list(shapes)


def run_matrix(
    optimizers: Sequence[str],
    sizes: Sequence[str] = MATRIX_SIZES,
    impls: Sequence[str] = MATRIX_CONTENDERS,
    rounds: int = 7,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> MatrixReport:
    for key in optimizers:
        if key not in MATRIX_OPTIMIZERS:
            raise ValueError(f"Unknown matrix optimizer {key!r}; choose from: {', '.join(MATRIX_OPTIMIZERS)}")
    for s in sizes:
        if s not in LAYOUTS:
            raise ValueError(f"Unknown size {s!r}; choose from: {', '.join(LAYOUTS)}")
    report = MatrixReport(
        device=f"cpu: {platform.processor() or platform.machine()}",
        torch=torch.__version__,
        date=datetime.date.today().isoformat(),
        threads=torch.get_num_threads(),
        rounds=rounds,
    )
    dev = torch.device("cpu")
    for key in optimizers:
        for size in sizes:
            shapes = _shapes(key, size)
            gen = torch.Generator().manual_seed(0)
            init = [torch.randn(s, generator=gen) * 0.02 for s in shapes]
            grads = [torch.randn(s, generator=gen) for s in shapes]
            steps, notes, prepare = {}, {}, {}
            for impl in impls:
                ps = [torch.nn.Parameter(x.clone()) for x in init]
                gs = [g.clone() for g in grads]
                # every step sees the gradients (heavyball sets p.grad to None after its
                # step); the assignment runs outside the timing, for every contender alike
                prepare[impl] = _regrad(ps, gs)
                prepare[impl]()
                try:
                    opt = _make(impl, key, ps)
                    opt.step()  # state allocated (heavyball compiles), outside the timing
                except Exception as exc:  # (ImportError included: heavyball is optional)
                    notes[impl] = f"{type(exc).__name__}: {exc}"[:120]
                    continue
                steps[impl] = opt.step
            times = race(steps, dev, rounds, prepare={k: prepare[k] for k in steps}) if steps else {}
            base = statistics.median(times["torch"]) if "torch" in times else None
            for impl in impls:
                n, k = numel(shapes), len(shapes)
                if impl in notes or impl not in times:
                    report.rows.append(MatrixRow(key, size, n, k, impl, None, note=notes.get(impl, "")))
                    log(f"{key:9s} {size:5s} {impl:10s} n/a ({notes.get(impl, '')})")
                    continue
                ts = times[impl]
                med = statistics.median(ts)
                row = MatrixRow(key, size, n, k, impl, med, min(ts), max(ts), base / med if base else None)
                report.rows.append(row)
                log(
                    f"{key:9s} {size:5s} {impl:10s} {med:9.2f} ms [{row.min_ms:.2f}–{row.max_ms:.2f}]"
                    + (f"  {row.speedup_vs_torch:.2f}× torch" if row.speedup_vs_torch else "")
                )
    return report


def format_table(report: MatrixReport) -> str:
    lines = [
        f"descent bench (matrix rules) — {report.device}, torch {report.torch}, {report.threads} threads, "
        f"{report.date}; median of {report.rounds} alternated rounds [min–max]",
        "",
    ]
    for r in report.rows:
        where = f"{r.optimizer:9s} {r.size:5s} {r.params:>9,d} in {r.tensors:3d} {r.impl:10s}"
        if r.median_ms is None:
            lines.append(f"{where} n/a ({r.note})")
            continue
        speed = f"{r.speedup_vs_torch:.2f}×" if r.speedup_vs_torch else "-"
        lines.append(f"{where} {r.median_ms:9.2f} ms [{r.min_ms:.2f}–{r.max_ms:.2f}] {speed:>7s}")
    return "\n".join(lines)


def to_json(report: MatrixReport) -> str:
    return json.dumps(asdict(report), indent=1)
