"""Containers that record their own mutations: ``optimizer.state`` and a group's params.

What a torch.optim user can reach stays theirs: replacing, deleting or clearing state
entries, or swapping a param in a group's list, must take effect at the next step. The
engine keeps state in flat buffers, so it must notice such edits, and noticing must cost
next to nothing on the hot path: each container bumps a counter when it changes, and the
engine compares one number per step. Containers the user swaps in (a plain
``defaultdict(dict)`` assigned to ``optimizer.state``, a plain list of params) are not
tracked; the engine then compares them entry by entry at every step instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any


class Cell:
    """A mutation counter shared by a state mapping and its entries."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def _bumping(base: Callable) -> Callable:
    def method(self, *args: Any, **kwargs: Any) -> Any:
        self.cell.n += 1
        return base(self, *args, **kwargs)

    method.__name__ = base.__name__
    method.__doc__ = base.__doc__
    return method


_DICT_MUTATORS = ("__setitem__", "__delitem__", "clear", "pop", "popitem", "update", "setdefault", "__ior__")
_LIST_MUTATORS = (
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "sort",
    "reverse",
)


class TrackedEntry(dict):
    """``optimizer.state[p]``: a dict whose every mutation bumps its mapping's counter."""

    __slots__ = ("cell",)

    for _name in _DICT_MUTATORS:
        locals()[_name] = _bumping(getattr(dict, _name))
    del _name

    def __reduce__(self) -> tuple:
        return (entry, (dict(self),))


def entry(data: Iterable = (), cell: Cell | None = None) -> TrackedEntry:
    """A tracked entry holding ``data``, counting into ``cell`` (a new one if not given)."""
    e = TrackedEntry()
    e.cell = cell or Cell()
    dict.update(e, data)
    return e


class TrackedState(defaultdict):
    """``optimizer.state``: a ``defaultdict(dict)`` that counts its own mutations and
    those of its entries (which it creates tracked)."""

    __slots__ = ("cell",)

    def __init__(self, default_factory: Any = dict, *args: Any, **kwargs: Any) -> None:
        super().__init__(dict)
        self.cell = Cell()
        if args or kwargs:
            self.update(*args, **kwargs)

    def __missing__(self, key: Any) -> TrackedEntry:
        # reading a param's state before it has any creates an empty entry, as
        # defaultdict does; empty and absent mean the same to every optimizer
        e = entry(cell=self.cell)
        dict.__setitem__(self, key, e)
        return e

    def __setitem__(self, key: Any, value: Any) -> None:
        self.cell.n += 1
        if type(value) is TrackedEntry:
            value.cell = self.cell
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def __ior__(self, other: Any) -> TrackedState:
        self.update(other)
        return self

    __delitem__ = _bumping(dict.__delitem__)
    clear = _bumping(dict.clear)
    pop = _bumping(dict.pop)
    popitem = _bumping(dict.popitem)

    def copy(self) -> TrackedState:
        return TrackedState(dict, self)

    def __reduce__(self) -> tuple:
        return (TrackedState, (), None, None, iter(self.items()))

    def __repr__(self) -> str:
        return f"TrackedState({dict.__repr__(self)})"


def tracked_state(state: Any) -> TrackedState:
    """``state`` as a :class:`TrackedState` (the same object when it is one already)."""
    return state if type(state) is TrackedState else TrackedState(dict, state)


class TrackedList(list):
    """A param group's ``params``: a list whose every mutation bumps its counter."""

    __slots__ = ("cell",)

    for _name in _LIST_MUTATORS:
        locals()[_name] = _bumping(getattr(list, _name))
    del _name

    def __reduce__(self) -> tuple:
        return (tracked_list, (list(self),))


def tracked_list(items: Iterable) -> TrackedList:
    out = TrackedList(items)
    out.cell = Cell()
    return out


def version(container: Any) -> int | None:
    """The mutation count of a tracked container; None for an untracked one."""
    cell = getattr(container, "cell", None) if type(container) in (TrackedState, TrackedList) else None
    return None if cell is None else cell.n
