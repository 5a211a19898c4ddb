"""One picture, or a gallery of every surface, from tuning to file.

:func:`picture` tunes (or not) the chosen optimizers on one surface and renders the
GIF or PNG; :func:`render_gallery` does it for many surfaces into one folder, and
:func:`write_index` writes an offline ``index.html`` that shows them.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import catalog
from . import render
from .surfaces import SURFACES, Surface, get
from .tuning import Tuned, tune_all

GALLERY_FORMATS = ("gif", "png")


def picture(
    surface: Surface,
    entries: Sequence[catalog.Entry],
    out: str | os.PathLike,
    *,
    steps: int | None = None,
    tune: bool = True,
    frames: int = render.FRAMES,
    size: tuple[int, int] = render.SIZE,
    progress: Any = None,
) -> dict[str, Tuned]:
    """Tune ``entries`` on ``surface`` (unless ``tune=False``) and render ``out``.

    ``progress`` is a :func:`~descent.landscapes.render.progress_bar` (or ``None``).
    Returns the settings drawn, by optimizer key, each with its path.
    """
    suffix = Path(out).suffix.lower()
    if suffix not in render.FORMATS:
        raise ValueError(f"Unsupported output {str(out)!r}: expected a .gif or .png file")
    n = surface.steps if steps is None else _positive(steps, "steps")
    bar = progress or render.NoProgress()
    task = bar.add_task(f"{'tuning' if tune else 'running'} on {surface.key}", total=len(entries))
    tuned = tune_all(surface, list(entries), n, tune, progress=lambda _: bar.advance(task))
    kw: dict[str, Any] = {"size": size}
    if suffix == ".gif":
        frame_task = bar.add_task(f"rendering {Path(out).name}", total=len(render.frame_steps(n, frames)))
        kw |= {"frames": frames, "progress": lambda i, total: bar.update(frame_task, completed=i + 1)}
    render.render(surface, tuned, out, **kw)
    return tuned


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (expected a positive integer)")
    return value


def _surfaces(surfaces: Iterable[str | Surface] | None) -> list[Surface]:
    if surfaces is None:
        return list(SURFACES.values())
    if isinstance(surfaces, str):
        surfaces = [s for s in surfaces.split(",") if s.strip()]
    out = [s if isinstance(s, Surface) else get(s) for s in surfaces]
    if not out:
        raise ValueError("no surface selected")
    return out


def render_gallery(
    out_dir: str | os.PathLike,
    *,
    surfaces: Iterable[str | Surface] | None = None,
    optimizers: Iterable[str] | str | None = None,
    steps: int | None = None,
    fmt: str = "gif",
    tune: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Render one picture per surface into ``out_dir`` (created if needed).

    ``surfaces``: keys (or :class:`Surface` objects), ``None`` for all of
    :data:`~descent.landscapes.surfaces.SURFACES`; ``optimizers``: catalog keys,
    ``None`` for ``catalog.NOTES`` and ``catalog.CURRENT``; ``steps``: ``None`` for each
    surface's own; ``fmt``: ``"gif"`` or ``"png"``; ``tune=False`` draws the default learning rates.

    Returns, per surface, ``{"surface": key, "title": str, "path": pathlib.Path,
    "tuned": {optimizer_key: {"lr": float, <knob>: value}}}``.
    """
    if fmt not in GALLERY_FORMATS:
        raise ValueError(f"Invalid fmt: {fmt!r} (expected 'gif' or 'png')")
    chosen = _surfaces(surfaces)
    entries = catalog.select(optimizers, default=(*catalog.NOTES, *catalog.CURRENT), points=True)
    if steps is not None:
        _positive(steps, "steps")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    with render.progress_bar(progress) as bar:
        for surface in chosen:
            path = folder / f"{surface.key}.{fmt}"
            tuned = picture(surface, entries, path, steps=steps, tune=tune, progress=bar)
            results.append(
                {
                    "surface": surface.key,
                    "title": surface.title,
                    "path": path,
                    "tuned": {k: t.as_dict() for k, t in tuned.items()},
                }
            )
    return results


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_setting(v) for v in value) + ")"
    return str(value)


def _card(item: dict[str, Any], out_dir: Path) -> str:
    surface = SURFACES.get(item["surface"])
    # A quadratic with another κ has its own formula; its title says which κ.
    same = surface is not None and surface.title == item["title"]
    formula = html.escape(surface.formula) if same else ""
    src = html.escape(os.path.relpath(Path(item["path"]), out_dir).replace(os.sep, "/"))
    rows = []
    for key, setting in item["tuned"].items():
        entry = catalog.get(key)
        cells = " ".join(f"{html.escape(k)}={html.escape(_setting(v))}" for k, v in setting.items())
        swatch = f'<span class="sw" style="background:{entry.color}"></span>'
        rows.append(f"<tr><td>{swatch}{html.escape(entry.label)}</td><td>{cells}</td></tr>")
    return (
        f'<section><h2>{html.escape(item["title"])}</h2><p class="f">{formula}</p>'
        f'<img src="{src}" alt="{html.escape(item["title"])}">'
        f"<table>{''.join(rows)}</table></section>"
    )


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
section{display:inline-block;vertical-align:top;margin:0 1.5em 2em 0;max-width:740px}
img{max-width:100%;border:1px solid #ccc;background:#fff}.f{font-family:monospace;color:#555}
table{border-collapse:collapse;font-size:.85em}td{padding:.1em .8em .1em 0}
.sw{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:middle}"""


_TUNED = (
    "Each optimizer's learning rate (and its key hyperparameter) was tuned per surface on one log "
    "grid: lowest distance to the goal, at its worst over the last 10 % of the steps; diverged runs "
    "excluded; ties to the smaller learning rate. See docs/landscapes.md."
)
_DEFAULTS = "Every optimizer runs with its default learning rate (no tuning)."


def write_index(
    out_dir: str | os.PathLike, results: list[dict[str, Any]], *, tuned: bool = True, title: str = ""
) -> Path:
    """An offline ``index.html`` in ``out_dir`` showing ``render_gallery``'s pictures
    (by relative path, no external resources)."""
    folder = Path(out_dir)
    title = title or "descent landscapes"
    cards = "\n".join(_card(item, folder) for item in results)
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{_TUNED if tuned else _DEFAULTS}</p>\n{cards}\n</body></html>\n"
    )
    path = folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
