"""``descent cache info|clear``: what the kernel cache holds, and emptying it."""

from __future__ import annotations

import argparse

from ..engine import aot, cache


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "cache",
        help="list or clear the compiled step kernels (info | clear)",
        description=(
            f"The step kernels built on this machine live in {aot.kernel_dir()} "
            f"(set ${aot.CACHE_ENV} to move them). 'info' lists them, 'clear' deletes them "
            "and every recorded build failure."
        ),
    )
    p.add_argument("action", choices=("info", "clear"))
    return p


def run(args: argparse.Namespace) -> int:
    if args.action == "clear":
        files, size = cache.clear()
        print(f"removed {files} files ({size / 1e6:.1f} MB) from {aot.kernel_dir()}")
        return 0
    entries = cache.info()
    kernels = [e for e in entries if e.failed is None]
    failed = [e for e in entries if e.failed is not None]
    total = sum(e.size for e in kernels)
    print(f"{aot.kernel_dir()}: {len(kernels)} kernels, {total / 1e6:.1f} MB; {len(failed)} failed builds")
    for e in kernels:
        secs = f"{e.seconds:.1f} s" if e.seconds is not None else "?"
        print(f"  {e.key}  {e.kernel:40s} {e.size / 1e6:5.1f} MB  built {e.built} in {secs}")
    for e in failed:
        print(f"  {e.key}  {e.kernel:40s} FAILED: {e.failed}")
    return 0
