"""``descent animate SURFACE``: optimizers racing across a loss surface, as a GIF or PNG.

Every optimizer's learning rate (and its key hyperparameter) is tuned on the surface
first, unless ``--defaults``. ``descent animate beale`` and ``descent animate saddle``
draw the notes' two pictures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .usage import UsageError, fail, nonnegative_float, positive_int

ANIMATE_DEFAULT = "sgd,momentum,nag,adagrad,adadelta,rmsprop,adam"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "animate",
        help="animate tuned optimizers on a classic loss surface (GIF or PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    surfaces = "beale, rosenbrock, himmelblau, rastrigin, booth, saddle, monkey or quadratic"
    p.add_argument("surface", help=surfaces)
    p.add_argument("--optimizers", default=ANIMATE_DEFAULT, help=f"comma list (default {ANIMATE_DEFAULT})")
    p.add_argument("--steps", help="optimizer steps (default: the surface's own)")
    p.add_argument("--noise", default="0", help="std of Gaussian gradient noise (default 0)")
    p.add_argument("--seed", default="0", help="seed of the gradient noise (default 0)")
    p.add_argument("--kappa", help="condition number of the 'quadratic' surface (default 20)")
    p.add_argument("--out", help="output .gif (animated) or .png (final paths); default SURFACE.gif")
    p.add_argument("--frames", default="90", help="frames of the GIF (default 90)")
    p.add_argument("--defaults", action="store_true", help="skip tuning: default learning rates")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# -- the command's inputs -------------------------------------------------------------------
def entries(keys: str):
    from .. import catalog

    try:
        return catalog.select(keys, points=True)
    except ValueError as exc:
        raise UsageError(f"--optimizers: {exc}") from None


def surface(key: str, kappa: str | None = None, noise: float = 0.0, seed: int = 0):
    from ..landscapes import surfaces

    k = nonnegative_float(kappa, "--kappa")
    try:
        s = surfaces.get(key, kappa=k)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return s.noisy(noise, seed) if noise else s


def out_path(value: str | None, default: str, suffixes: tuple[str, ...] = (".gif", ".png")) -> Path:
    path = Path(value if value is not None else default)
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"invalid --out {str(path)!r}: the file must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UsageError(f"invalid --out {str(path)!r}: that is a folder")
    return path


# -- the command ---------------------------------------------------------------------------
def _options(args: argparse.Namespace) -> dict[str, Any]:
    noise = nonnegative_float(args.noise, "--noise")
    seed = positive_int(args.seed, "--seed", least=0)
    surf = surface(args.surface, args.kappa, noise, seed)
    return {
        "surface": surf,
        "entries": entries(args.optimizers),
        "steps": positive_int(args.steps, "--steps"),
        "frames": positive_int(args.frames, "--frames", least=2),
        "out": out_path(args.out, f"{surf.key}.gif"),
    }


def run(args: argparse.Namespace) -> int:
    try:
        opts = _options(args)
    except UsageError as exc:
        return fail("animate", exc)
    from ..landscapes import picture, render
    from ..landscapes.tuning import TuningError

    start = time.perf_counter()
    try:
        with render.progress_bar(not args.no_progress) as bar:
            tuned = picture(
                opts["surface"],
                opts["entries"],
                opts["out"],
                steps=opts["steps"],
                tune=not args.defaults,
                frames=opts["frames"],
                progress=bar,
            )
    except TuningError as exc:
        print(f"descent animate: {exc}; no picture written", file=sys.stderr)
        return 1
    from .. import catalog

    for key, t in tuned.items():
        print(f"  {render.label(catalog.get(key), t)}")
    print(f"wrote {opts['out']} in {time.perf_counter() - start:.1f} s")
    return 0
