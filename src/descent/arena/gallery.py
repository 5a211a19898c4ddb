"""The report's Landscapes section: optimizer trajectories on classic loss surfaces,
from ``descent.landscapes.render_gallery`` when that feature is installed.

The arena does not depend on it: without it (or if it fails) the report says so and
everything else stands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: In ``--quick`` only this many surfaces, as still images, to stay within time.
QUICK_SURFACES = 2


def _quick_surfaces() -> list[str] | None:
    try:
        from descent.landscapes.surfaces import SURFACES  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any failure: let render_gallery pick
        return None
    return list(SURFACES)[:QUICK_SURFACES]


def render(root: Path, optimizers: list[str], quick: bool) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Render the gallery under ``root/landscapes``. Returns (items with paths relative
    to ``root``, None) or (None, why there is no gallery)."""
    try:
        from descent.landscapes import render_gallery  # type: ignore[attr-defined]
    except ImportError:
        return None, "descent.landscapes is not part of this install"
    out = root / "landscapes"
    kw: dict[str, Any] = {"optimizers": optimizers, "fmt": "png" if quick else "gif", "progress": False}
    if quick:
        kw["surfaces"] = _quick_surfaces()
    try:
        items = render_gallery(out, **kw)
    except Exception as exc:  # noqa: BLE001 - the gallery is optional; say why it is missing
        return None, f"render_gallery failed: {type(exc).__name__}: {exc}"
    return [_relative(root, item) for item in items], None


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
