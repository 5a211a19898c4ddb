"""The playground: an interactive page where the notes' optimizers race across the
landscapes' surfaces, with live hyperparameters, a step mode that draws each
optimizer's gradient and moments, and the theory of the quadratic beside the
measurement.

* :mod:`~descent.playground.symbols` — the one table of state keys → the notes'
  symbols, and the sliders.
* :mod:`~descent.playground.formulas` — each optimizer's update, line by line (the
  source of the matching section of docs/conventions.md).
* :mod:`~descent.playground.requests` — what a request may ask for, checked.
* :mod:`~descent.playground.simulate` — the race, through descent's optimizer classes.
* :mod:`~descent.playground.overlay` — theory's rates on the quadratic, and measured ones.
* :mod:`~descent.playground.api` — the JSON endpoints; :mod:`~descent.playground.server`
  serves them with the page; :mod:`~descent.playground.export` writes a static copy.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so ``python -m descent.playground.formulas`` runs its module once.
_LAZY = {"Playground": ".api", "PlaygroundServer": ".server"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Playground", "PlaygroundServer"]
