"""Where tasks come from: a built-in name, ``"package.module:factory"``, or a
:class:`~descent.arena.tasks.task.Task` given as is."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from .builtin import BUILTIN
from .task import Task, TaskError


def builtin_names() -> tuple[str, ...]:
    return tuple(BUILTIN)


def resolve(spec: str | Task) -> Task:
    """A :class:`Task` from a built-in name, ``"package.module:factory"``, or a Task."""
    if isinstance(spec, Task):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TaskError(f"Invalid task {spec!r}: give a built-in name or 'package.module:factory'")
    spec = spec.strip()
    builtin = BUILTIN
    if spec in builtin:
        task = builtin[spec]()
    elif ":" in spec:
        task = _import_task(spec)
    else:
        raise TaskError(
            f"Unknown task {spec!r}; choose from: {', '.join(builtin)} (or give 'package.module:factory')"
        )
    task.ref = spec
    return task


def _import_task(spec: str) -> Task:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TaskError(f"Invalid task path {spec!r}: expected 'package.module:factory'")
    # A console script's sys.path lacks the working directory; tasks next to the user
    # (``descent arena --task mytasks:make``) should import as with ``python -m``.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TaskError(f"Task {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TaskError(f"Task {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Task):
        if not callable(obj):
            raise TaskError(f"Task {spec!r}: {attr!r} is neither a Task nor a callable returning one")
        try:
            obj = obj()
        except Exception as exc:
            raise TaskError(f"Task {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, Task):
        raise TaskError(f"Task {spec!r}: {attr}() returned {type(obj).__name__}, not descent.arena.Task")
    return obj
