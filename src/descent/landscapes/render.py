"""Pictures: a contour map of a surface with each optimizer's path.

:func:`animate` writes an animated GIF (``matplotlib.animation.FuncAnimation`` saved with
the Pillow writer): one moving marker and trail per optimizer in its catalog
colour, a legend with the setting drawn, and a step counter. :func:`draw_static`
writes a PNG of the whole paths. :func:`render` picks one by the file's extension and
writes through a temporary file, so a failed render leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.artist
import matplotlib.colors
import matplotlib.lines
import numpy as np
import torch
from matplotlib import animation
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from PIL import Image

from .. import catalog
from .surfaces import Surface
from .tuning import Tuned

FORMATS = (".gif", ".png")
#: default picture size in pixels (width, height)
SIZE = (720, 450)
DPI = 80
FRAMES = 90
FPS = 15


def label(entry: catalog.Entry, tuned: Tuned) -> str:
    """Legend text: the optimizer and the setting drawn."""
    parts = [f"lr={tuned.lr:.3g}"]
    for k, v in tuned.hyper.items():
        value = "(" + ", ".join(f"{b:g}" for b in v) + ")" if isinstance(v, (tuple, list)) else f"{v:g}"
        parts.append(f"{catalog.symbol(k)}={value}")
    return f"{entry.label}  " + " ".join(parts)


def grid(surface: Surface, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f on an n×n grid over the window (one batched call)."""
    x0, x1, y0, y1 = surface.window
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    return xs.numpy(), ys.numpy(), surface(X, Y).numpy()


def _background(ax, surface: Surface) -> None:
    xs, ys, Z = grid(surface)
    x0, x1, y0, y1 = surface.window
    if surface.log_levels:
        lo = max(float(Z.min()), float(np.percentile(Z, 0.5)), 1e-3)
        norm = LogNorm(vmin=lo, vmax=float(Z.max()))
        img, levels = np.clip(Z, lo, None), np.geomspace(lo, float(Z.max()), 16)
    else:
        norm = Normalize(vmin=float(Z.min()), vmax=float(Z.max()))
        img, levels = Z, np.linspace(float(Z.min()), float(Z.max()), 17)[1:-1]
    extent = (x0, x1, y0, y1)
    ax.imshow(img, extent=extent, origin="lower", cmap="Greys_r", norm=norm, alpha=0.55, aspect="auto")
    ax.contour(xs, ys, Z, levels=levels, colors="0.35", linewidths=0.6, alpha=0.8)
    for mx, my in surface.minima:
        ax.plot(mx, my, marker="*", ms=14, color="gold", mec="black", mew=0.8, zorder=4, ls="none")
    for sx, sy in surface.saddles:
        ax.plot(sx, sy, marker="X", ms=9, color="white", mec="black", mew=0.8, zorder=4, ls="none")
    ax.plot(*surface.start, marker="o", ms=7, color="white", mec="black", zorder=4, ls="none")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _title(surface: Surface, tuned: dict[str, Tuned]) -> str:
    mode = "tuned lr" if any(t.tuned for t in tuned.values()) else "default lr"
    noise = f", gradient noise σ={surface.noise:g} (seed {surface.seed})" if surface.noise else ""
    return f"{surface.title}: {surface.formula}\n{mode}{noise}"


def _blank(size: tuple[int, int], dpi: int) -> Figure:
    # An Agg canvas of our own: no pyplot, no global backend switch, works headless.
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _figure(surface: Surface, size: tuple[int, int], dpi: int):
    fig = _blank(size, dpi)
    ax = fig.add_axes((0.08, 0.11, 0.5, 0.74))
    _background(ax, surface)
    return fig, ax


def _legend(fig, handles: list, title: str) -> None:
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.6, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9, x=0.33, y=0.975)


def frame_steps(steps: int, frames: int) -> list[int]:
    """The steps shown, evenly spread from 0 to ``steps`` (both included)."""
    n = max(2, min(frames, steps + 1))
    return sorted({round(s) for s in np.linspace(0, steps, n)})


def _ordered(tuned: dict[str, Tuned]) -> list[tuple[catalog.Entry, Tuned]]:
    return [(catalog.get(k), t) for k, t in tuned.items()]


def _backdrop(surface: Surface, tuned: dict[str, Tuned], size: tuple[int, int], dpi: int):
    """The static picture (contours, axes, legend, title) rendered once to pixels."""
    fig, ax = _figure(surface, size, dpi)
    handles = [
        matplotlib.lines.Line2D([], [], color=e.color, lw=1.6, label=label(e, t)) for e, t in _ordered(tuned)
    ]
    _legend(fig, handles, _title(surface, tuned))
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    box, limits = ax.get_position(), (ax.get_xlim(), ax.get_ylim())
    return pixels, box, limits


def animate(
    surface: Surface,
    tuned: dict[str, Tuned],
    out: str | os.PathLike,
    *,
    frames: int = FRAMES,
    fps: int = FPS,
    size: tuple[int, int] = SIZE,
    dpi: int = DPI,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write an animated GIF of the paths in ``tuned`` (each ``Tuned`` carries its path).

    The static part is drawn once and pasted as a figure image under transparent axes
    that hold only the moving artists, so each of the animation's redraws is cheap.
    """
    pixels, box, (xlim, ylim) = _backdrop(surface, tuned, size, dpi)
    fig = _blank(size, dpi)
    fig.add_artist(_Pixels(pixels))
    ax = fig.add_axes(box)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    ax.set_axis_off()
    items = _ordered(tuned)
    steps = len(items[0][1].path.xy) - 1
    shown = frame_steps(steps, frames)
    trails = [ax.plot([], [], color=e.color, lw=1.6)[0] for e, _ in items]
    heads = [ax.plot([], [], "o", color=e.color, mec="black", mew=0.6, ms=7)[0] for e, _ in items]
    counter = ax.text(0.02, 0.97, "", transform=ax.transAxes, va="top", fontsize=9)
    counter.set_bbox({"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})

    def update(i: int):
        s = shown[i]
        for (_, t), trail, head in zip(items, trails, heads):
            xy = t.path.xy[: s + 1]
            trail.set_data(xy[:, 0], xy[:, 1])
            last = _last_finite(xy)
            head.set_data([last[0]], [last[1]]) if last is not None else head.set_data([], [])
        counter.set_text(f"step {s}/{steps}")
        return [*trails, *heads, counter]

    anim = animation.FuncAnimation(fig, update, frames=len(shown), blit=True, repeat=False)
    writer = _PaletteWriter(_palette(pixels, [e.color for e, _ in items]), fps=fps)
    with _atomic(out) as tmp:
        anim.save(tmp, writer=writer, dpi=dpi, progress_callback=progress)
    return Path(out)


class _Pixels(matplotlib.artist.Artist):
    """A full-figure RGBA image drawn as is: no resampling, no colour mapping."""

    def __init__(self, rgba: np.ndarray):
        super().__init__()
        # Agg's draw_image puts row 0 at the bottom.
        self._rgba = np.ascontiguousarray(rgba[::-1])
        self.set_zorder(-10)

    def draw(self, renderer) -> None:
        gc = renderer.new_gc()
        renderer.draw_image(gc, 0, 0, self._rgba)
        gc.restore()


def _palette(pixels: np.ndarray, colors: list[str]) -> Image.Image:
    """One 256-colour palette for every frame: the backdrop's colours and the paths'."""
    swatches = np.array([matplotlib.colors.to_rgb(c) for c in [*colors, "black", "white", "gold"]]) * 255
    strip = np.repeat(swatches.astype(np.uint8)[None], 64, axis=0).repeat(64, axis=1)
    source = np.concatenate([pixels[..., :3].reshape(-1, 3), strip.reshape(-1, 3)])[:, None]
    return Image.fromarray(np.ascontiguousarray(source)).quantize(256, method=Image.Quantize.FASTOCTREE)


class _PaletteWriter(animation.PillowWriter):
    """Matplotlib's Pillow writer, mapping each frame onto one shared palette (instead of
    Pillow quantizing every frame again when it writes the GIF: ~30× faster)."""

    def __init__(self, palette: Image.Image, fps: int):
        super().__init__(fps=fps)
        self._palette = palette

    def grab_frame(self, **savefig_kwargs) -> None:
        super().grab_frame(**savefig_kwargs)
        frame = self._frames[-1].convert("RGB")
        self._frames[-1] = frame.quantize(palette=self._palette, dither=Image.Dither.NONE)


def _last_finite(xy: np.ndarray) -> np.ndarray | None:
    ok = np.flatnonzero(np.isfinite(xy).all(axis=1))
    return xy[ok[-1]] if len(ok) else None


def draw_static(
    surface: Surface,
    tuned: dict[str, Tuned],
    out: str | os.PathLike,
    *,
    size: tuple[int, int] = SIZE,
    dpi: int = DPI,
) -> Path:
    """Write a PNG of the full paths, each ending in a marker."""
    fig, ax = _figure(surface, size, dpi)
    handles = []
    for entry, t in _ordered(tuned):
        xy = t.path.xy
        (line,) = ax.plot(xy[:, 0], xy[:, 1], color=entry.color, lw=1.6, label=label(entry, t))
        last = _last_finite(xy)
        if last is not None:
            ax.plot(*last, "o", color=entry.color, mec="black", mew=0.6, ms=7)
        handles.append(line)
    steps = len(xy) - 1
    ax.text(0.02, 0.97, f"{steps} steps", transform=ax.transAxes, va="top", fontsize=9)
    _legend(fig, handles, _title(surface, tuned))
    with _atomic(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(out)


def render(surface: Surface, tuned: dict[str, Tuned], out: str | os.PathLike, **kw) -> Path:
    """GIF or PNG by ``out``'s extension."""
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"Unsupported output {str(out)!r}: expected a .gif or .png file")
    if suffix == ".png":
        kw.pop("frames", None), kw.pop("fps", None), kw.pop("progress", None)
        return draw_static(surface, tuned, out, **kw)
    return animate(surface, tuned, out, **kw)


class NoProgress:
    """The progress bar's interface, doing nothing."""

    def add_task(self, description: str, total: float | None = None) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def update(self, task: int, **kw) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool = True):
    """A rich progress bar on stderr (tuning, then frames), or :class:`NoProgress`.

    Callers that already show a rich live display should pass ``enabled=False``
    (``progress=False`` to ``render_gallery``): two live displays garble the terminal."""
    if not enabled:
        yield NoProgress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        yield bar


@contextmanager
def _atomic(out: str | os.PathLike):
    """A temporary path next to ``out``, moved onto ``out`` only if the block succeeds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same folder (so the move is atomic) and same extension (writers go by it); created
    # with open() rather than mkstemp so the picture gets the usual permissions.
    tmp = out.with_name(f".{out.stem}.{secrets.token_hex(4)}.tmp{out.suffix}")
    with open(tmp, "xb"):
        pass
    try:
        yield str(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__: Sequence[str] = ("animate", "draw_static", "render", "label", "frame_steps", "grid")
