"""The playground's JSON endpoints, as plain functions of the request body.

``catalog`` describes every surface and optimizer for the page; ``surface`` samples a
surface on a grid for its contour plot; ``race`` runs the chosen optimizers
(:mod:`~descent.playground.simulate`) and returns their paths, losses, gradients and
moments; ``tune`` asks :mod:`descent.landscapes.tuning` for an optimizer's tuned
setting. Every number comes from descent's Python; the page only draws.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .. import catalog as _catalog
from ..landscapes import surfaces, tuning
from . import formulas, overlay, requests, symbols
from .requests import BadRequest, RunSpec, Scene
from .simulate import Trace, race

#: Contour grid: this many samples along the window's longer side.
GRID = 200
#: The race a page opens with: the notes' plain, heavy-ball, per-coordinate and Adam steps.
INITIAL = ("sgd", "momentum", "rmsprop", "adam")
#: Races kept, per run: a slider moved on one optimizer recomputes that one only.
CACHE = 256


def _finite(a: np.ndarray) -> list:
    """Values (frames,) or points (frames, 2) as lists, a value or point that is not
    finite as null (JSON has no NaN)."""
    ok = np.isfinite(a) if a.ndim == 1 else np.isfinite(a).all(axis=1)
    rows = a.tolist()
    return [row if good else None for row, good in zip(rows, ok.tolist())]


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return None


def _settings(entry: _catalog.Entry, hyper: dict[str, Any]) -> dict[str, Any]:
    """Every numeric setting the run used (class defaults, the entry's, the learner's)."""
    out = {}
    for name, value in {**entry.defaults, **hyper}.items():
        v = _json(value)
        if v is not None and name not in (
            "flat",
            "compile",
            "foreach",
            "fused",
            "capturable",
            "differentiable",
        ):
            out[name] = v
    return out


def state_keys(entry: _catalog.Entry) -> list[str]:
    """The state an optimizer keeps, read from its rule (no optimizer is built)."""
    return [k for t in entry.rule for k in (*t.state, *t.host)]


def describe_surface(s: surfaces.Surface) -> dict[str, Any]:
    return {
        "key": s.key,
        "title": s.title,
        "formula": s.formula,
        "window": list(s.window),
        "box": list(s.box),
        "minima": [list(m) for m in s.minima],
        "saddles": [list(m) for m in s.saddles],
        "start": list(s.start),
        "steps": s.steps,
        "escape": s.escape,
        "tol": s.tol,
        "log_levels": s.log_levels,
    }


def describe_optimizer(entry: _catalog.Entry) -> dict[str, Any]:
    names = symbols.exposed(entry)
    return {
        "key": entry.key,
        "label": entry.label,
        "color": entry.color,
        "note": entry.note,
        "class": entry.cls.__name__,
        "knob": entry.knob[0] if entry.knob else None,
        "settings": {n: symbols.setting(entry, n) for n in names},
        "defaults": _settings(entry, {}),
        "notes_set": entry.key in _catalog.NOTES,
        "state": state_keys(entry),
        "formula": formulas.template(entry, state_keys(entry)),
    }


def catalog() -> dict[str, Any]:
    """Every surface and optimizer, with the tables the page draws by."""
    return {
        "surfaces": [describe_surface(s) for s in surfaces.SURFACES.values()],
        "optimizers": [describe_optimizer(e) for e in _catalog.ENTRIES],
        "notes": list(_catalog.NOTES),
        "initial": [k for k in INITIAL if k in _catalog.BY_KEY],
        "limits": {
            "max_steps": requests.MAX_STEPS,
            "max_runs": requests.MAX_RUNS,
            "kappa": list(requests.KAPPA_RANGE),
            "angle": list(requests.ANGLE_RANGE),
            "max_noise": requests.MAX_NOISE,
        },
        **symbols.describe(),
    }


def surface(data: Any) -> dict[str, Any]:
    """The surface of a scene, sampled on a grid over its window (float32, base64,
    rows from the bottom of the window up)."""
    s = requests.scene(data).base()
    x0, x1, y0, y1 = s.window
    wide = (x1 - x0) >= (y1 - y0)
    nx = GRID if wide else max(40, round(GRID * (x1 - x0) / (y1 - y0)))
    ny = max(40, round(GRID * (y1 - y0) / (x1 - x0))) if wide else GRID
    xs = torch.linspace(x0, x1, nx, dtype=torch.float64)
    ys = torch.linspace(y0, y1, ny, dtype=torch.float64)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    z = s(X, Y).to(torch.float32).numpy()
    return {
        **describe_surface(s),
        "grid": {"nx": nx, "ny": ny, "z": base64.b64encode(z.tobytes()).decode("ascii")},
        "range": [float(z.min()), float(z.max())],
    }


def trace_json(trace: Trace) -> dict[str, Any]:
    entry = trace.spec.entry
    return {
        "key": entry.key,
        "label": entry.label,
        "color": entry.color,
        "settings": _settings(entry, trace.spec.kwargs),
        "xy": _finite(trace.xy),
        "loss": _finite(trace.loss),
        "grad": _finite(trace.grad),
        "state": {k: _finite(v) for k, v in trace.state.items()},
        "stopped_at": trace.stopped_at,
        "diverged": trace.diverged,
        "reached_at": trace.reached_at,
    }


class Playground:
    """The endpoints with a cache of runs (by scene and setting: every run's path is
    independent of the others it races with, so a cached one is reused as it is)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[tuple[Scene, RunSpec], Trace] = OrderedDict()
        self._tuned: OrderedDict[tuple[Scene, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def race(self, data: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        scene = requests.scene(data)
        specs = requests.runs(data)
        traces = self.traces(scene, specs)
        out: dict[str, Any] = {
            "surface": describe_surface(scene.base()),
            "start": list(scene.build().start),
            "steps": scene.n_steps,
            "noise": scene.noise,
            "runs": [trace_json(t) for t in traces],
        }
        if scene.surface == "quadratic":
            out["theory"] = overlay.overlay(scene.base_kappa, traces)
        out["elapsed_ms"] = (time.perf_counter() - t0) * 1000
        return out

    def traces(self, scene: Scene, specs: list[RunSpec]) -> list[Trace]:
        """The runs of ``specs`` on ``scene``, computing those not in the cache together."""
        with self._lock:
            found = {s: self._runs[(scene, s)] for s in specs if (scene, s) in self._runs}
        todo = list(dict.fromkeys(s for s in specs if s not in found))
        if todo:
            fresh = race(scene.build(), todo, scene.n_steps)
            with self._lock:
                for spec, trace in zip(todo, fresh):
                    found[spec] = trace
                    self._remember(self._runs, (scene, spec), trace)
        return [found[s] for s in specs]

    def tune(self, data: Any) -> dict[str, Any]:
        """An optimizer's setting by the landscapes' tuning rule, on this scene."""
        scene = requests.scene(data)
        key = data.get("key")
        try:
            entry = _catalog.get(key) if isinstance(key, str) else _catalog.get(str(key))
            _catalog.refuse_model(entry)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        with self._lock:
            hit = self._tuned.get((scene, entry.key))
        if hit is not None:
            return hit
        try:
            t = tuning.tune(scene.build(), entry, scene.n_steps)
        except tuning.TuningError as exc:
            raise BadRequest(str(exc)) from None
        out = {
            "key": entry.key,
            "settings": {"lr": t.lr, **{k: _json(v) for k, v in t.hyper.items()}},
            "score": t.score,
            "candidates": t.candidates,
            "diverged": t.diverged,
        }
        with self._lock:
            self._remember(self._tuned, (scene, entry.key), out)
        return out

    @staticmethod
    def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > CACHE:
            cache.popitem(last=False)
