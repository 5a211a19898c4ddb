"""What a request to the playground may ask for, checked: a bad value is a
:class:`BadRequest` whose message names it (the page shows it as it is)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .. import catalog
from ..landscapes import surfaces
from ..landscapes.surfaces import Surface
from . import symbols

#: The most steps one run may take (a page asks for a surface's few hundred).
MAX_STEPS = 2000
#: The most runs one request may race (every catalog optimizer, a few times over).
MAX_RUNS = 32
#: The quadratic's condition number and turn, as the page's sliders allow them.
KAPPA_RANGE = (1.0, 1e4)
ANGLE_RANGE = (-180.0, 180.0)
MAX_NOISE = 100.0


class BadRequest(ValueError):
    """A request the playground cannot run; the message names the bad value."""


@dataclass(frozen=True)
class Scene:
    """The surface a race runs on, from where, for how long, with what noise."""

    surface: str
    kappa: float | None = None
    angle: float | None = None
    start: tuple[float, float] | None = None
    steps: int | None = None
    noise: float = 0.0
    seed: int = 0

    def base(self) -> Surface:
        if self.surface == "quadratic":
            return surfaces.quadratic(self.base_kappa, 0.0 if self.angle is None else self.angle)
        return surfaces.SURFACES[self.surface]

    def build(self) -> Surface:
        """The surface with this scene's start point and noise."""
        s = self.base()
        if self.start is not None:
            s = dataclasses.replace(s, start=self.start)
        return s.noisy(self.noise, self.seed) if self.noise else s

    @property
    def base_kappa(self) -> float:
        return 20.0 if self.kappa is None else self.kappa

    @property
    def n_steps(self) -> int:
        return self.base().steps if self.steps is None else self.steps


@dataclass(frozen=True)
class RunSpec:
    """One optimizer of a race: its catalog key and the settings the learner set."""

    key: str
    hyper: tuple[tuple[str, Any], ...]

    @property
    def entry(self) -> catalog.Entry:
        return catalog.get(self.key)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.hyper)


def _number(data: dict, name: str, lo: float, hi: float, default: Any = None) -> Any:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name} = {value!r} is not a finite number")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} = {value!r} is out of range [{lo:g}, {hi:g}]")
    return float(value)


def _integer(data: dict, name: str, lo: int, hi: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise BadRequest(f"{name} = {value!r} is not an integer")
    if not lo <= value <= hi:
        raise BadRequest(f"{name} = {value!r} is out of range [{lo}, {hi}]")
    return int(value)


def scene(data: Any) -> Scene:
    """The :class:`Scene` of a request body (a JSON object)."""
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    key = data.get("surface")
    if not isinstance(key, str) or key.strip().lower() not in surfaces.SURFACES:
        raise BadRequest(f"unknown surface {key!r}; choose from: {', '.join(surfaces.SURFACES)}")
    key = key.strip().lower()
    kappa = _number(data, "kappa", *KAPPA_RANGE)
    angle = _number(data, "angle", *ANGLE_RANGE)
    if key != "quadratic" and (kappa is not None or angle is not None):
        raise BadRequest(f"kappa and angle only apply to the 'quadratic' surface, not {key!r}")
    out = Scene(
        key,
        kappa,
        angle,
        None,
        _integer(data, "steps", 1, MAX_STEPS),
        _number(data, "noise", 0.0, MAX_NOISE, 0.0),
        _integer(data, "seed", 0, 2**31 - 1) or 0,
    )
    start = data.get("start")
    if start is None:
        return out
    ok = isinstance(start, (list, tuple)) and len(start) == 2
    if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in start):
        raise BadRequest(f"start = {start!r} is not a pair of numbers [x, y]")
    x0, x1, y0, y1 = out.base().window
    if not (x0 <= start[0] <= x1 and y0 <= start[1] <= y1):
        raise BadRequest(
            f"start = {list(start)!r} is outside the surface's window [{x0:g}, {x1:g}] × [{y0:g}, {y1:g}]"
        )
    return dataclasses.replace(out, start=(float(start[0]), float(start[1])))


def run_spec(item: Any, i: int) -> RunSpec:
    """One entry of a request's ``optimizers``: ``{"key": …, "lr": …, <setting>: …}``."""
    if not isinstance(item, dict):
        raise BadRequest(f"optimizers[{i}] = {item!r} is not an object")
    key = item.get("key")
    try:
        entry = catalog.get(key) if isinstance(key, str) else None
    except ValueError:
        entry = None
    if entry is None or entry.model:
        raise BadRequest(
            f"optimizers[{i}]: unknown optimizer {key!r}; choose from: "
            + ", ".join(e.key for e in catalog.ENTRIES)
        )
    where = f"optimizers[{i}] ({entry.key})"
    allowed = symbols.exposed(entry)
    hyper = {}
    for name, value in item.items():
        if name == "key":
            continue
        if name not in allowed:
            raise BadRequest(f"{where}: {name!r} is not a setting here; choose from: {', '.join(allowed)}")
        try:
            hyper[name] = symbols.check(name, value, where)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    spec = RunSpec(entry.key, tuple(sorted(hyper.items())))
    _construct(spec, where)
    return spec


def _construct(spec: RunSpec, where: str) -> None:
    """Let the class validate the settings as it always does (its message names them)."""
    import torch

    try:
        spec.entry.make([torch.zeros(2, dtype=torch.float64, requires_grad=True)], flat=False, **spec.kwargs)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"{where}: {exc}") from None


def runs(data: dict) -> list[RunSpec]:
    items = data.get("optimizers")
    if not isinstance(items, list) or not items:
        raise BadRequest("optimizers must be a non-empty list of {key, lr, …} objects")
    if len(items) > MAX_RUNS:
        raise BadRequest(f"{len(items)} optimizers is more than {MAX_RUNS} in one race")
    return [run_spec(item, i) for i, item in enumerate(items)]
