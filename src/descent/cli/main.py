"""Entry point: ``descent <subcommand> …``.

Each subcommand lives in ``descent.cli.<name>`` and provides ``add_parser(subparsers)``
(returning its parser) and ``run(args) -> int``. Subcommands whose module or optional
dependencies are missing are listed with the reason instead of failing the whole CLI.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = ("arena", "animate", "gallery", "theory", "playground", "bench", "warmup", "cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="descent",
        description="Optimizers written once from their rules, a fused engine, and an arena.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"descent.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("descent.cli."):
                continue
            why = f"needs the package {exc.name!r}: pip install 'descent-optim[arena]'"
            stub = sub.add_parser(name, help=f"(unavailable: {why})")
            stub.set_defaults(_run=lambda args, why=why, name=name: _missing(name, why))
            continue
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def _missing(name: str, why: str) -> int:
    print(f"descent {name}: unavailable, {why}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
