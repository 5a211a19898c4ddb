"""``descent playground --export DIR``: the playground as static files, for hosting
without Python. The page is the same; its numbers come from a grid of settings
computed here by the same endpoints, and the page says what the grid holds.

The grid, per scene and optimizer: the landscapes' tuned setting, and the learning
rates tuned × 10^(j/2) around it (``lrs`` of them) crossed with the catalog's values
of the optimizer's key hyperparameter; every other setting at its default. Start
points, step counts and noise (none) are each scene's own.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, catalog
from ..landscapes import surfaces
from . import api, overlay, symbols
from .requests import RunSpec, Scene
from .simulate import Trace

#: The extra quadratics of the default export: one ill-conditioned, one turned.
EXTRA = {
    "quadratic-k100": ("Quadratic, κ = 100", Scene("quadratic", kappa=100.0)),
    "quadratic-turned": ("Quadratic, κ = 20, turned 30°", Scene("quadratic", kappa=20.0, angle=30.0)),
}
#: Significant digits kept in the exported numbers (enough to draw and to read).
DIGITS = 5


def scenes(text: str | None = None) -> list[tuple[str, str, Scene]]:
    """(id, title, scene) for a comma list of ids (``None``: every surface and EXTRA)."""
    known = {k: (s.title, Scene(k)) for k, s in surfaces.SURFACES.items()} | EXTRA
    keys = list(known) if text is None else [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in known]
    if unknown or not keys:
        named = ", ".join(map(repr, unknown)) or repr(text)
        raise ValueError(f"--surfaces: unknown scene {named}; choose from: {', '.join(known)}")
    return [(k, *known[k]) for k in keys]


def settings_grid(entry: catalog.Entry, tuned: dict[str, Any], lrs: int) -> list[dict[str, Any]]:
    """The exported settings of ``entry``: every exposed setting at its default, the
    learning rate on a half-decade grid around the tuned one, the knob over its values."""
    base = {n: symbols.setting(entry, n) for n in symbols.exposed(entry)}
    steps = [j / 2 for j in range(-(lrs // 2), lrs - lrs // 2)]
    rates = [float(f"{tuned['lr'] * 10**s:.4g}") if s else tuned["lr"] for s in steps]
    knobs = [None] if entry.knob is None else [_plain(v) for v in entry.knob[1]]
    if entry.knob is not None and tuned.get(entry.knob[0]) not in knobs:
        knobs.append(tuned[entry.knob[0]])
    out = []
    for knob in knobs:
        for lr in rates:
            s = {**base, "lr": lr}
            if knob is not None:
                s[entry.knob[0]] = knob
            out.append(s)
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _spec(key: str, settings: dict[str, Any]) -> RunSpec:
    hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return RunSpec(key, tuple(sorted(hyper.items())))


def _rounded(trace: Trace) -> Trace:
    def sig(a: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            e = np.floor(np.log10(np.abs(a)))
            scale = 10.0 ** (DIGITS - 1 - np.where(np.isfinite(e), e, 0))
            return np.where(np.isfinite(a) & (a != 0), np.round(a * scale) / scale, a)

    return dataclasses.replace(
        trace,
        xy=sig(trace.xy),
        loss=sig(trace.loss),
        grad=sig(trace.grad),
        state={k: sig(v) for k, v in trace.state.items()},
    )


def scene_data(app: api.Playground, scene: Scene, entries: list[catalog.Entry], lrs: int) -> dict[str, Any]:
    """One scene's surface, tuned settings and grid of runs, as the page reads them."""
    body = {k: v for k, v in dataclasses.asdict(scene).items() if v is not None and k != "seed"}
    tuned = {e.key: app.tune({**body, "key": e.key}) for e in entries}
    grid = {e.key: settings_grid(e, tuned[e.key]["settings"], lrs) for e in entries}
    specs = [_spec(k, s) for k, settings in grid.items() for s in settings]
    traces = app.traces(scene, specs)
    kappa = scene.base_kappa if scene.surface == "quadratic" else None
    runs: dict[str, list] = {e.key: [] for e in entries}
    for spec, settings, trace in zip(specs, [s for v in grid.values() for s in v], traces):
        item = {"settings": settings, "trace": api.trace_json(_rounded(trace))}
        if kappa is not None:
            item["theory"] = {
                "method": overlay.method_of(trace),
                "predicted": overlay.predicted(trace, kappa),
                "measured": overlay.measured(trace),
            }
        runs[spec.key].append(item)
    out = {
        "surface": api.surface(body),
        "steps": scene.n_steps,
        "tuned": {k: t["settings"] for k, t in tuned.items()},
        "candidates": {k: t["candidates"] for k, t in tuned.items()},
        "diverged": {k: t["diverged"] for k, t in tuned.items()},
        "runs": runs,
    }
    if kappa is not None:
        th = overlay.overlay(kappa, [])
        out["theory"] = {k: th[k] for k in ("kappa", "curvatures", "methods")}
    return out


def describe(chosen: list[tuple[str, str, Scene]], entries: list[catalog.Entry], lrs: int) -> str:
    """What the export holds, said on its page."""
    names = ", ".join(html.escape(t) for _, t, _ in chosen)
    opts = ", ".join(html.escape(e.label) for e in entries)
    powers = ", ".join(f"{j / 2:g}" for j in range(-(lrs // 2), lrs - lrs // 2))
    day = datetime.date.today().isoformat()
    return (
        f"<strong>A static export of descent's playground</strong> (descent {html.escape(__version__)}, "
        f"{day}). Everything here was computed ahead of time by descent's Python, and only this grid was: "
        f"the surfaces {names}, each from its own start point, for its own number of steps, without "
        f"gradient noise; the optimizers {opts}, each at the landscapes' tuned setting "
        f"(descent.landscapes.tuning) and at learning rates tuned × 10^k for k in {{{powers}}}, crossed "
        "with the catalog's values of its key hyperparameter, every other setting at its default. "
        "Sliders snap to these values; the start point, steps, noise and the quadratic's κ and angle are "
        "fixed. Run <code>descent playground</code> for all of them live."
    )


def _script(name: str, value: Any, key: str | None = None) -> str:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if key is None:
        return f"window.{name} = {text};\n"
    return f"window.{name} = window.{name} || {{}};\nwindow.{name}[{json.dumps(key)}] = {text};\n"


def write(
    out: str | Path,
    chosen: list[tuple[str, str, Scene]],
    entries: list[catalog.Entry],
    *,
    lrs: int = 5,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """Write the page, its assets and its data into ``out``; return the index.html."""
    folder = Path(out)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    app = api.Playground()
    meta = []
    for sid, title, scene in chosen:
        log(f"computing {title} …")
        data = scene_data(app, scene, entries, lrs)
        (folder / "data" / f"{sid}.js").write_text(_script("PLAYGROUND_SCENES", data, sid), encoding="utf-8")
        meta.append(
            {"id": sid, "title": title, "surface": {k: v for k, v in data["surface"].items() if k != "grid"}}
        )
    cat = api.catalog()
    keys = [e.key for e in entries]
    cat["initial"] = [k for k in api.INITIAL if k in keys] or keys[:4]
    index = {"catalog": cat, "scenes": meta, "description": describe(chosen, entries, lrs)}
    (folder / "data" / "index.js").write_text(_script("PLAYGROUND_DATA", index), encoding="utf-8")
    static = resources.files("descent.playground") / "static"
    for item in static.iterdir():
        if item.is_file() and item.name != "index.html":
            (folder / item.name).write_bytes(item.read_bytes())
    page = (static / "index.html").read_text(encoding="utf-8")
    page = page.replace(
        '<script src="draw.js">', '<script src="data/index.js"></script>\n<script src="draw.js">', 1
    )
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    return path
