"""``descent bench``: step time of every optimizer against torch.optim, in one run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .. import bench, bench_dist, bench_formats, bench_loop, bench_matrix, bench_sizes


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="time every optimizer's step against torch.optim (for-loop, foreach, fused)",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        nargs="?",
        const=",".join(bench_sizes.SIZES),
        default=None,
        help="the size sweep instead: transformer layouts of 1K … 51M params, alternated rounds against "
        f"torch.optim (optionally a comma-separated subset of {', '.join(bench_sizes.SIZES)})",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="with --sizes: give every step new gradient tensors, as zero_grad() and backward do "
        "(default: gradients stay in place), with DeepSpeed's CPU Adam as a contender where it installs",
    )
    p.add_argument(
        "--loop",
        nargs="?",
        const=",".join(bench_loop.MODELS),
        default=None,
        help="whole training loops instead (zero_grad, forward, backward, step): ms/iteration and "
        f"peak memory against torch.optim (optionally a subset of {', '.join(bench_loop.MODELS)})",
    )
    p.add_argument(
        "--variants",
        default=None,
        help=f"with --loop: comma-separated loop variants (default: {','.join(bench_loop.VARIANTS)})",
    )
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="the step under FSDP2 instead: 2 ranks (gloo on the CPU), a model of "
        f"{4 * bench_dist.BLOCKS} sharded tensors, against torch.optim's foreach and fused "
        f"(default optimizers: {','.join(bench_dist.FSDP_OPTIMIZERS)})",
    )
    p.add_argument(
        "--formats",
        nargs="?",
        const=",".join(bench_formats.DEFAULT_SIZES),
        default=None,
        help="AdamW's state formats instead (float32, bfloat16, 8-bit) against torch fused and the peers' "
        "8-bit Adam where they install: state bytes/param, ms/step, peak memory "
        f"(optionally a comma-separated subset of {', '.join(bench_sizes.SIZES)}; default "
        f"{','.join(bench_formats.DEFAULT_SIZES)})",
    )
    p.add_argument(
        "--optimizers",
        default=None,
        help="comma-separated keys (default: every one); muon,adafactor alone time the matrix rules "
        "against torch.optim (and heavyball where installed) on --sizes layouts (default 611K,6.6M)",
    )
    p.add_argument("--impls", default=None, help="comma-separated implementations")
    p.add_argument("--few", default=None, help="'few big tensors' layout as COUNTxSIZE")
    p.add_argument("--many", default=None, help="'many small tensors' layout as COUNTxSIZE")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--repeat",
        type=int,
        default=10,
        help="alternated timing rounds per case (median and spread reported)",
    )
    p.add_argument("--no-first-step", action="store_true", help="skip the fresh-process first-step timing")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report to this file")
    return p


def run(args: argparse.Namespace) -> int:
    def keys(value: str) -> list[str]:
        return [k.strip() for k in value.split(",") if k.strip()]

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if args.repeat < 1:
            raise ValueError(f"Invalid --repeat {args.repeat}")
        optimizers = keys(args.optimizers or ",".join(bench.OPTIMIZERS))
        if sum((args.fsdp, args.sizes is not None, args.loop is not None, args.formats is not None)) > 1:
            raise ValueError("choose one of --fsdp, --sizes, --loop and --formats")
        if args.fresh and args.sizes is None:
            raise ValueError("--fresh goes with --sizes")
        if args.formats is not None:
            report = bench_formats.run_formats(
                keys(args.formats),
                keys(args.impls or ",".join(bench_formats.CONTENDERS)),
                rounds=args.repeat,
            )
            text, table = bench_formats.to_json(report), bench_formats.format_table(report)
        elif args.loop is not None:
            loop = bench_loop.run_loop(
                keys(args.loop),
                keys(args.variants or ",".join(bench_loop.VARIANTS)),
                impls=keys(args.impls or ",".join(bench_loop.LOOP_CONTENDERS)),
                key=keys(args.optimizers)[0] if args.optimizers else "adam",
                rounds=args.repeat,
            )
            text, table = bench_loop.to_json(loop), bench_loop.format_table(loop)
        elif args.optimizers and set(keys(args.optimizers)) <= set(bench_matrix.MATRIX_OPTIMIZERS):
            mat = bench_matrix.run_matrix(
                keys(args.optimizers),
                keys(args.sizes or ",".join(bench_matrix.MATRIX_SIZES)),
                impls=keys(args.impls or ",".join(bench_matrix.MATRIX_CONTENDERS)),
                rounds=args.repeat,
            )
            text, table = bench_matrix.to_json(mat), bench_matrix.format_table(mat)
        elif args.fsdp:
            fsdp = bench_dist.run_fsdp(
                keys(args.optimizers or ",".join(bench_dist.FSDP_OPTIMIZERS)),
                keys(args.impls or ",".join(bench_dist.FSDP_CONTENDERS)),
                rounds=args.repeat,
                device=device,
            )
            text, table = bench_dist.to_json(fsdp), bench_dist.format_table(fsdp)
        elif args.sizes is not None:
            default = bench_sizes.FRESH_CONTENDERS if args.fresh else bench_sizes.CONTENDERS
            sweep = bench_sizes.run_sizes(
                optimizers,
                keys(args.sizes),
                impls=keys(args.impls or ",".join(default)),
                device=device,
                rounds=args.repeat,
                first_step=not args.no_first_step and not args.fresh,
                fresh=args.fresh,
            )
            text, table = bench_sizes.to_json(sweep), bench_sizes.format_table(sweep)
        else:
            layouts = bench.default_layouts(device)
            if args.few:
                layouts[0] = bench.Layout.parse("few-big", args.few)
            if args.many:
                layouts[1] = bench.Layout.parse("many-small", args.many)
            report = bench.run(
                optimizers,
                layouts,
                impls=keys(args.impls or ",".join(bench.IMPLS)),
                device=device,
                repeat=args.repeat,
                first_step=not args.no_first_step,
            )
            text, table = report.to_json(), bench.format_table(report)
    except (ValueError, RuntimeError) as exc:
        print(f"descent bench: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text if args.json else table)
    return 0
