"""``descent gallery``: every surface for the notes' optimizers, into one folder with an
offline ``index.html``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .usage import UsageError, fail, positive_int


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gallery",
        help="render every surface (tuned optimizers) into a folder with an index page",
        description=__doc__,
    )
    p.add_argument("--out", default="landscapes", help="output folder (default ./landscapes)")
    p.add_argument("--surfaces", help="comma list of surfaces (default: all)")
    p.add_argument(
        "--optimizers", help="comma list of optimizer keys (default: the notes' + sfadamw, adopt, adafactor)"
    )
    p.add_argument("--steps", help="optimizer steps for every surface (default: each surface's own)")
    p.add_argument("--format", default="gif", help="gif (animated, default) or png (final paths)")
    p.add_argument("--defaults", action="store_true", help="skip tuning: default learning rates")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check(args: argparse.Namespace) -> dict[str, Any]:
    from .. import catalog
    from ..landscapes import surfaces

    fmt = args.format.lower().lstrip(".")
    if fmt not in ("gif", "png"):
        raise UsageError(f"invalid --format {args.format!r}: expected gif or png")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"invalid --out {args.out!r}: a file of that name exists")
    keys = None
    if args.surfaces is not None:
        keys = [k.strip().lower() for k in args.surfaces.split(",") if k.strip()]
        unknown = [k for k in keys if k not in surfaces.SURFACES]
        if unknown or not keys:
            raise UsageError(
                f"--surfaces: unknown surface {', '.join(map(repr, unknown)) or repr(args.surfaces)}; "
                f"choose from: {', '.join(surfaces.SURFACES)}"
            )
    try:
        entries = catalog.select(args.optimizers, default=(*catalog.NOTES, *catalog.CURRENT), points=True)
    except ValueError as exc:
        raise UsageError(f"--optimizers: {exc}") from None
    steps = positive_int(args.steps, "--steps")
    return {"out": out, "surfaces": keys, "optimizers": [e.key for e in entries], "steps": steps, "fmt": fmt}


def run(args: argparse.Namespace) -> int:
    try:
        opts = _check(args)
    except UsageError as exc:
        return fail("gallery", exc)
    from ..landscapes import render_gallery, write_index
    from ..landscapes.tuning import TuningError

    start = time.perf_counter()
    try:
        results = render_gallery(
            opts["out"],
            surfaces=opts["surfaces"],
            optimizers=opts["optimizers"],
            steps=opts["steps"],
            fmt=opts["fmt"],
            tune=not args.defaults,
            progress=not args.no_progress,
        )
    except TuningError as exc:
        print(f"descent gallery: {exc}", file=sys.stderr)
        return 1
    index = write_index(opts["out"], results, tuned=not args.defaults)
    print(f"wrote {len(results)} pictures and {index} in {time.perf_counter() - start:.1f} s")
    return 0
