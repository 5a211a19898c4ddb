"""The report's figures. Each function takes plain data (picklable: they run in the
worker pool) and writes one PNG; colours are the catalog's, so an optimizer looks the
same here, in the landscapes and everywhere else."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

DPI = 96


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}
    )
    return plt


def _save(fig, path: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _xy(xs: list, ys: list) -> tuple[list, list]:
    return [x for x, y in zip(xs, ys)], [math.nan if y is None else y for y in ys]


def curves(
    path: str, title: str, panels: list[dict[str, Any]], metric_name: str, target: float | None
) -> str:
    """Validation loss (top) and metric (bottom) against steps, one column per regime:
    the tuned setting's mean over seeds, with the min–max band."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 5.4), squeeze=False)
    for col, panel in enumerate(panels):
        for row, (key, ylabel) in enumerate((("val_loss", "validation loss"), ("val_metric", metric_name))):
            ax = axes[row][col]
            for line in panel["lines"]:
                band = line[key]
                if band is None:
                    continue
                x, mean = _xy(band["step"], band["mean"])
                _, lo = _xy(band["step"], band["lo"])
                _, hi = _xy(band["step"], band["hi"])
                ax.plot(x, mean, color=line["color"], label=line["label"], lw=1.4)
                ax.fill_between(x, lo, hi, color=line["color"], alpha=0.18, lw=0)
            if key == "val_loss":
                ax.set_yscale("log")
                ax.set_title(panel["title"])
            elif target is not None:
                ax.axhline(target, color="k", ls=":", lw=0.8)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
    return _finish(fig, axes, path, title, below=0.0, wspace=0.32, hspace=0.32, top=0.9)


def _finish(fig: Any, axes: Any, path: str, title: str, below: float, **adjust: float) -> str:
    """One legend for all panels under the figure (its top ``below`` the figure's bottom
    edge, so however many rows it takes it stays clear of the axes' labels), the title,
    and save (the saved image grows to hold the legend)."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(labels), 9),
        frameon=False,
        bbox_to_anchor=(0.5, -below),
    )
    fig.suptitle(title)
    fig.subplots_adjust(**adjust)
    return _save(fig, path)


def sensitivity(path: str, title: str, panels: list[dict[str, Any]]) -> str:
    """Final validation loss (tuning seed) against the learning rate, one panel per
    regime; × marks a diverged run, hollow markers the knob trials, the dotted line the
    "good lr" threshold."""
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        finite = [
            p["val_loss"] for line in panel["lines"] for p in line["points"] if p["val_loss"] is not None
        ]
        top = max(finite) * 1.3 if finite else 1.0
        for line in panel["lines"]:
            lr = [p for p in line["points"] if p["phase"] == "lr"]
            ax.plot(
                [p["lr"] for p in lr],
                [top if p["val_loss"] is None else p["val_loss"] for p in lr],
                marker="o", ms=3.5, color=line["color"], label=line["label"], lw=1.2,
            )  # fmt: skip
            for p in lr:
                if p["val_loss"] is None:
                    ax.plot(p["lr"], top, marker="x", color=line["color"], ms=6)
            knob = [p for p in line["points"] if p["phase"] == "knob" and p["val_loss"] is not None]
            ax.scatter([p["lr"] for p in knob], [p["val_loss"] for p in knob], facecolors="none",
                       edgecolors=line["color"], s=30)  # fmt: skip
        if panel.get("threshold") is not None:
            ax.axhline(panel["threshold"], color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final validation loss")
        ax.set_title(panel["title"])
    return _finish(fig, axes, path, title, below=0.02, wspace=0.32, top=0.8)


def ranks(path: str, problems: list[str], rows: list[dict[str, Any]]) -> str:
    """Rank of each optimizer (rows) on each problem (columns), tuned and with defaults."""
    plt = _plt()
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 0.55 * len(problems) * 2 + 3), 0.38 * len(rows) + 2.2))
    for ax, budget in zip(axes, ("tuned", "defaults")):
        grid = np.array([r[budget] for r in rows], dtype=float)
        im = ax.imshow(grid, cmap="viridis_r", vmin=1, vmax=max(len(rows), 2), aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(
                j, i, f"{v:g}", ha="center", va="center", fontsize=7, color="k" if v <= len(rows) / 2 else "w"
            )
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows] if budget == "tuned" else [])
        ax.set_xticks(range(len(problems)), problems, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"rank, {budget}")
    fig.colorbar(im, ax=axes, shrink=0.8, label="rank (1 = best)")
    return _save(fig, path)


def profiles(path: str, taus: list[float], lines: dict[str, list[dict[str, Any]]]) -> str:
    """Performance profiles: fraction of problems within τ× the best validation loss."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(lines), figsize=(4.2 * len(lines), 3.4), squeeze=False)
    for ax, (budget, items) in zip(axes[0], lines.items()):
        for item in items:
            ax.step(taus, item["profile"], where="post", color=item["color"], label=item["label"], lw=1.4)
        ax.set_xlabel("τ (loss ratio to the best)")
        ax.set_ylabel("fraction of problems")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"performance profile, {budget}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", frameon=False, bbox_to_anchor=(1.0, 0.5))
    fig.subplots_adjust(wspace=0.32)
    return _save(fig, path)
