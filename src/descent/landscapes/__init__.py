"""Landscapes: optimizers racing across classic loss surfaces, tuned fairly, and the
theory of their rates checked by measurement.

* :mod:`~descent.landscapes.surfaces` — Beale, Rosenbrock, Himmelblau, Rastrigin, Booth,
  the saddle x² − y², the monkey saddle and an ill-conditioned quadratic, each with its
  minima, window, start point and a seeded noisy variant.
* :mod:`~descent.landscapes.tuning` — each optimizer's lr (and key hyperparameter) tuned
  per surface on one log grid, all candidates run as one batch.
* :mod:`~descent.landscapes.trajectories` — running descent's optimizers on a surface.
* :mod:`~descent.landscapes.render` — animated GIFs and static PNGs.
* :mod:`~descent.landscapes.gallery` — one picture per surface, and an index page.
* :mod:`~descent.landscapes.theory` — measured vs predicted rates of GD, heavy ball and
  Nesterov on quadratics; Reddi et al.'s counterexample to Adam.

The interface the arena calls::

    render_gallery(out_dir, *, surfaces=None, optimizers=None, steps=None, fmt="gif",
                   tune=True, progress=True) -> list[dict]

renders one picture per surface into ``out_dir`` (creating it) and returns
``[{"surface": key, "title": str, "path": pathlib.Path,
"tuned": {optimizer_key: {"lr": float, <knob>: value}}}]``. ``fmt`` is ``"gif"`` or
``"png"``; ``surfaces`` and ``optimizers`` take ``None`` (every surface /
``catalog.NOTES``) or lists of keys. :func:`write_index` adds the offline ``index.html``
that ``descent gallery`` writes.
"""

from __future__ import annotations

import importlib
from typing import Any

from .surfaces import SURFACES, Surface, get, quadratic
from .trajectories import run_batch, trajectory
from .tuning import LR_GRID, Tuned, tune, tune_all

# Pictures need matplotlib, Pillow and rich (the ``arena`` extra); load them on first
# use so surfaces, tuning and theory work without them.
_FROM_GALLERY = ("picture", "render_gallery", "write_index")


def __getattr__(name: str) -> Any:
    if name in _FROM_GALLERY:
        return getattr(importlib.import_module(".gallery", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LR_GRID",
    "SURFACES",
    "Surface",
    "Tuned",
    "get",
    "picture",
    "quadratic",
    "render_gallery",
    "run_batch",
    "trajectory",
    "tune",
    "tune_all",
    "write_index",
]
