"""``descent playground``: the notes' optimizers racing on the landscapes' surfaces in
your browser, with live hyperparameters, a step mode and the quadratic's theory. It
serves a local page on 127.0.0.1 (nothing is fetched from the internet); Ctrl-C stops
it. ``--export DIR`` writes a static copy with a precomputed grid of settings instead."""

from __future__ import annotations

import argparse
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .usage import UsageError, fail, positive_int


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "playground",
        help="interactive page: optimizers racing on loss surfaces, live hyperparameters, step mode",
        description=__doc__,
    )
    p.add_argument("--port", default="0", help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument(
        "--export", metavar="DIR", help="write a static page with a precomputed grid to DIR and exit"
    )
    p.add_argument(
        "--surfaces", help="--export: comma list of scenes (default: every surface, two more quadratics)"
    )
    p.add_argument("--optimizers", help="--export: comma list of optimizer keys (default: the notes' set)")
    p.add_argument(
        "--lrs", default="5", help="--export: learning rates per setting around the tuned one (default 5)"
    )
    return p


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UsageError(f"invalid --port {text!r}: expected an integer from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid --port {text!r}: expected an integer from 0 to 65535")
    return port


def run(args: argparse.Namespace, ready: Callable[[Any], None] | None = None) -> int:
    """Serve until Ctrl-C (or ``--export`` and return). ``ready(server)`` is called once
    the server listens (tests use it to stop it)."""
    try:
        if args.export:
            return _export(args)
        port = _port(args.port)
    except UsageError as exc:
        return fail("playground", exc)
    from ..playground.server import PlaygroundServer

    try:
        server = PlaygroundServer("127.0.0.1", port, verbose=args.verbose)
    except OSError as exc:
        return fail("playground", UsageError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"))
    print(f"descent playground on {server.url}  (Ctrl-C stops it)", flush=True)
    if not args.no_browser:
        threading.Timer(0.3, webbrowser.open, (server.url,)).start()
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _export(args: argparse.Namespace) -> int:
    from .. import catalog
    from ..playground import export

    out = Path(args.export)
    if out.exists() and not out.is_dir():
        raise UsageError(f"invalid --export {args.export!r}: a file of that name exists")
    lrs = positive_int(args.lrs, "--lrs")
    try:
        scenes = export.scenes(args.surfaces)
        entries = catalog.select(args.optimizers, default=catalog.NOTES, points=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    index = export.write(out, scenes, entries, lrs=lrs, log=lambda msg: print(msg, flush=True))
    print(f"wrote {index}")
    return 0
