"""The report's Landscapes section: optimizer trajectories on classic loss surfaces,
from ``descent.landscapes.render_gallery`` when that feature is installed.

The arena does not depend on it: without it (or if it fails) the report says so and
everything else stands. Each surface is its own job on the worker pool, so the
pictures render two at a time after the training runs (never beside them: that would
slow the runs whose wall time is being measured).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

#: In ``--quick`` only this many surfaces, as still images, untuned, to stay within time.
QUICK_SURFACES = 2


def available() -> str | None:
    """None when the gallery can be drawn, else why not."""
    try:
        from descent.landscapes import render_gallery  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return "descent.landscapes is not part of this install"
    return None


def _surface_keys() -> list[str] | None:
    try:
        from descent.landscapes.surfaces import SURFACES  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any failure: one call for every surface
        return None
    return list(SURFACES)


def draw(out: str, surfaces: list[str] | None, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """One job: ``render_gallery`` for some surfaces (``None``: all), in a worker."""
    from descent.landscapes import render_gallery  # type: ignore[attr-defined]

    return render_gallery(out, surfaces=surfaces, **kw)


def submit(pool: Executor, root: Path, optimizers: list[str], quick: bool) -> Callable[[], tuple]:
    """Start rendering under ``root/landscapes``; the returned function waits and gives
    (items with paths relative to ``root``, None) or (None, why there is no gallery)."""
    why = available()
    if why:
        return lambda: (None, why)
    kw: dict[str, Any] = {"optimizers": optimizers, "fmt": "png" if quick else "gif", "progress": False}
    keys = _surface_keys()
    if quick:
        # a couple of still images at the default learning rates: tuning them on every
        # surface would cost more than the quick arena itself
        kw["tune"] = False
        keys = (keys or [])[:QUICK_SURFACES] or None
    out = str(root / "landscapes")
    futures = [pool.submit(draw, out, [k] if keys else None, kw) for k in keys or [None]]

    def collect() -> tuple[list[dict[str, Any]] | None, str | None]:
        try:
            items = [item for f in futures for item in f.result()]
        except Exception as exc:  # noqa: BLE001 - the gallery is optional; say why it is missing
            return None, f"render_gallery failed: {type(exc).__name__}: {exc}"
        return [_relative(root, item) for item in items], None

    return collect


def _relative(root: Path, item: dict[str, Any]) -> dict[str, Any]:
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
    return {
        "surface": str(item.get("surface", path.stem)),
        "title": str(item.get("title", item.get("surface", path.stem))),
        "path": rel.as_posix(),
        "tuned": {str(k): _plain(v) for k, v in dict(item.get("tuned") or {}).items()},
    }


def _plain(value: Any) -> Any:
    """A JSON-able copy of a gallery's "tuned" entry (dataclasses become dicts)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
