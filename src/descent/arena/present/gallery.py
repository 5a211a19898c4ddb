"""The report's Landscapes section: optimizer trajectories on classic loss surfaces,
drawn by ``descent.landscapes.gallery.render_gallery``.

If drawing fails the report says why and everything else stands. Each surface is its
own job on the worker pool, so the pictures render two at a time after the training
runs (never beside them: that would slow the runs whose wall time is being measured).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from ...landscapes.surfaces import SURFACES
from ..records import Landscape, jsonable

#: In ``--quick`` only this many surfaces, as still images, untuned, to stay within time.
QUICK_SURFACES = 2


def draw(out: str, surfaces: list[str], kw: dict[str, Any]) -> list[dict[str, Any]]:
    """One job: ``render_gallery`` for some surfaces, in a worker."""
    from ...landscapes import gallery

    return gallery.render_gallery(out, surfaces=surfaces, **kw)


def submit(pool: Executor, root: Path, optimizers: list[str], quick: bool) -> Callable[[], tuple]:
    """Start rendering under ``root/landscapes``; the returned function waits and gives
    (the pictures, with paths relative to ``root``, None) or (None, why there are none)."""
    kw: dict[str, Any] = {"optimizers": optimizers, "fmt": "png" if quick else "gif", "progress": False}
    keys = list(SURFACES)
    if quick:
        # a couple of still images at the default learning rates: tuning them on every
        # surface would cost more than the quick arena itself
        kw["tune"] = False
        keys = keys[:QUICK_SURFACES]
    out = str(root / "landscapes")
    futures = [pool.submit(draw, out, [k], kw) for k in keys]

    def collect() -> tuple[list[Landscape] | None, str | None]:
        try:
            items = [item for f in futures for item in f.result()]
        except Exception as exc:  # noqa: BLE001 - a report without pictures, and why
            return None, f"render_gallery failed: {type(exc).__name__}: {exc}"
        return [_relative(root, item) for item in items], None

    return collect


def _relative(root: Path, item: dict[str, Any]) -> Landscape:
    path = Path(item["path"])
    if not path.is_absolute():
        path = Path.cwd() / path
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path("landscapes") / path.name
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return Landscape(
        surface=str(item.get("surface", path.stem)),
        title=str(item.get("title", item.get("surface", path.stem))),
        path=rel.as_posix(),
        tuned=jsonable(dict(item.get("tuned") or {})),
    )
