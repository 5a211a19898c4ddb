"""``descent warmup``: build the step kernels of every built-in optimizer ahead of time."""

from __future__ import annotations

import argparse
import sys

import torch

from .. import catalog
from ..engine import aot, cache, formats

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "warmup",
        help="build the compiled step kernels of the built-in optimizers now, for every later process",
        description=(
            "Build the step kernels of the built-in optimizers (their defaults, the settings "
            "the arena tunes, and weight decay) into the kernel cache, so no later process "
            "waits for or runs without one. Kernels a step needs and the cache lacks are "
            "otherwise built in the background on first use."
        ),
    )
    p.add_argument(
        "--optimizers",
        default=None,
        help=f"comma-separated keys (default: all of {', '.join(catalog.BY_KEY)})",
    )
    p.add_argument(
        "--dtypes", default="float32", help=f"comma-separated, of {', '.join(DTYPES)} (default: float32)"
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    p.add_argument(
        "--state-dtype",
        default=None,
        help="also the kernels of state kept as bfloat16 or 8bit (the optimizers' state_dtype=)",
    )
    p.add_argument(
        "--stochastic-rounding",
        action="store_true",
        help="also the kernels that round bfloat16 params stochastically (stochastic_rounding=True)",
    )
    return p


def variants(entry: catalog.Entry) -> list[dict]:
    """The settings of ``entry`` worth a kernel: its defaults, each value of its tuned
    knob, and weight decay on."""
    out = [{}]
    if entry.knob:
        key, values = entry.knob
        out += [{key: v} for v in values]
    if "weight_decay" in entry.defaults:
        out.append({"weight_decay": 1e-4})
    return out


def run(args: argparse.Namespace) -> int:
    try:
        entries = catalog.select(args.optimizers, default=tuple(catalog.BY_KEY))
        dtypes = [_dtype(d) for d in args.dtypes.split(",") if d.strip()]
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"Invalid --device {device!r} (expected cpu or cuda)")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        fmt = {
            "state_dtype": formats.parse_state_dtype(args.state_dtype),
            "stochastic_rounding": args.stochastic_rounding,
        }
        probe = torch.nn.Parameter(torch.zeros(1))
        # (an entry built over a model gets a one-layer one: its AdamW part has a kernel)
        opts = [
            e.make(torch.nn.Linear(1, 1) if e.model else [probe], compile=False, **fmt, **v)
            for e in entries
            for v in variants(e)
        ]
        print(f"kernel cache: {aot.kernel_dir()}", flush=True)
        summary = cache.warmup(opts, dtypes, device, log=lambda s: print(s, flush=True))
    except (ValueError, RuntimeError) as exc:
        print(f"descent warmup: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(summary.built)} built in {summary.seconds:.0f} s, {len(summary.present)} already there, "
        f"{len(summary.failed)} failed — in {aot.kernel_dir()}"
    )
    return 1 if summary.failed else 0


def _dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.strip()]
    except KeyError:
        raise ValueError(f"Invalid dtype {name.strip()!r}; choose from: {', '.join(DTYPES)}") from None
