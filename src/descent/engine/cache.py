"""The kernel cache as a user sees it: build ahead of time, list, clear."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..rules.base import Chain
from . import aot, formats, native
from .kernels import fresh_scalars, pack

#: Steps whose scalars are probed for static settings (RAdam's switch to its adaptive
#: step comes at step 6 with β₂ = 0.999; later steps only repeat the last setting).
PROBE_STEPS = 12


def specs(opt: torch.optim.Optimizer, dtype: torch.dtype, device: str) -> list[aot.Spec]:
    """Every kernel ``opt``'s steps run for params of ``dtype`` on ``device``: one per
    param group structure and per static setting its scalars take over the first steps;
    with ``skip_nonfinite`` its guarded variant too (a step of one piece runs it), and with
    ``state_dtype`` or ``stochastic_rounding`` the format's beside the full-precision one
    that small tensors keep; on the CPU, the windows variant that steps fresh gradients
    several tensors a call (:func:`.grads.calls`)."""
    engine = getattr(opt, "_engine", None)
    windows = getattr(engine, "windows", 0) if device == "cpu" and getattr(engine, "flat", False) else 0
    guards = (False, True) if getattr(engine, "guard", False) else (False,)
    fmts: dict = {None: None}
    if engine is not None and (engine.state_dtype is not None or engine.sr):
        fmt = formats.for_bucket(engine.state_dtype, engine.sr, formats.MIN_NUMEL, dtype)
        fmts[fmt] = None
    out: dict[tuple, aot.Spec] = {}
    for group in opt.param_groups:
        chain: Chain = opt.chain(group)  # type: ignore[attr-defined]
        for _, hs in zip(range(PROBE_STEPS), fresh_scalars(chain, group)):
            statics, names, _ = pack(hs)
            for fmt in fmts:
                for guard in guards:
                    spec = aot.Spec(chain, statics, names, dtype, device, guard, fmt)
                    out.setdefault((chain.key, statics, names, fmt, guard, 0), spec)
            if windows:
                spec = aot.Spec(chain, statics, names, dtype, device, windows=windows)
                out.setdefault((chain.key, statics, names, None, False, windows), spec)
    return list(out.values())


@dataclass
class Summary:
    built: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def warmup(
    optimizers: Iterable[torch.optim.Optimizer],
    dtypes: Iterable[torch.dtype],
    device: str,
    log: Callable[[str], None] = print,
) -> Summary:
    """Build (in this process, under the same locks as background builds) every kernel
    the optimizers' steps need that is not in the cache yet, and the step's C++
    bookkeeping (:mod:`.native`)."""
    if not aot.available():
        raise RuntimeError(f"this torch ({torch.__version__}) cannot build AOTInductor packages")
    todo: dict[str, aot.Spec] = {}
    for opt in optimizers:
        for dtype in dtypes:
            for spec in specs(opt, dtype, device):
                todo.setdefault(aot.digest(spec), spec)
    summary = Summary()
    start = time.perf_counter()
    for i, (key, spec) in enumerate(todo.items(), 1):
        pt2, failed, _ = aot.paths(key)
        if pt2.exists():
            summary.present.append(key)
            continue
        t0 = time.perf_counter()
        ok = aot.build_once(key, spec)
        (summary.built if ok else summary.failed).append(key)
        why = "" if ok else " FAILED: " + (failed.read_text().splitlines()[1:2] or [""])[0]
        log(f"[{i}/{len(todo)}] {spec.describe():40s} {time.perf_counter() - t0:6.1f} s{why}")
    module, failed, _ = native.paths()
    if not module.exists() and not failed.exists() and native.unavailable() is None:
        t0 = time.perf_counter()
        ok = native.compile_module()
        why = "" if ok else " FAILED: " + " ".join(failed.read_text().splitlines()[1:2])
        (summary.built if ok else summary.failed).append(module.name.split(".")[0])
        log(f"[+] {native.WHAT:40s} {time.perf_counter() - t0:6.1f} s{why}")
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class Entry:
    key: str
    path: Path
    size: int
    kernel: str
    built: str
    seconds: float | None
    failed: str | None = None


def info() -> list[Entry]:
    """What the cache holds: every package (and every recorded failure)."""
    d = aot.kernel_dir()
    out = []
    for path in sorted(d.glob("*.pt2")) if d.exists() else []:
        meta = {}
        side = path.with_suffix(".json")
        if side.exists():
            meta = json.loads(side.read_text())
        lib = path.with_suffix(".so")  # (its library, once taken out: descent.engine.native)
        out.append(
            Entry(
                path.stem,
                path,
                path.stat().st_size + (lib.stat().st_size if lib.exists() else 0),
                meta.get("kernel", "?"),
                meta.get("built", "?"),
                meta.get("seconds"),
            )
        )
    for path in sorted(d.glob("native-*.so")) if d.exists() else []:  # (descent.engine.native)
        built = datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
        out.append(Entry(path.name.split(".")[0], path, path.stat().st_size, native.WHAT, built, None))
    for path in sorted(d.glob("*.failed")) if d.exists() else []:
        lines = path.read_text().splitlines()
        out.append(
            Entry(
                path.stem,
                path,
                path.stat().st_size,
                lines[0] if lines else "?",
                "-",
                None,
                " ".join(lines[1:2]),
            )
        )
    return out


def clear() -> tuple[int, int]:
    """Delete every package, record and lock; ``(files, bytes)`` removed."""
    d = aot.kernel_dir()
    files = size = 0
    if not d.exists():
        return 0, 0
    # A process that loaded a package keeps its mapping; one building writes a temporary
    # file and renames it into place, so deleting under it is safe.
    for path in d.iterdir():
        if path.is_file() and path.suffix in (".pt2", ".json", ".failed", ".lock", ".log", ".so", ".tmp"):
            size += path.stat().st_size
            path.unlink(missing_ok=True)
            files += 1
    return files, size
