"""The terminal summary at the end of ``descent arena``: mean ranks by regime and
budget, each problem's winner, and the recommendation with its reasons."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .data import REGIME_LABELS


def print_summary(results: dict[str, Any], out: str | os.PathLike, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rec = results["recommendation"]
    opts = {o["key"]: o for o in results["optimizers"]}
    scopes = list(rec["leaderboards"])
    table = Table(title="Mean rank (1 = best) by data regime: tuned / defaults", title_justify="left")
    table.add_column("optimizer")
    for s in scopes:
        table.add_column("all problems" if s == "all" else REGIME_LABELS.get(s, s), justify="right")
    for key, o in opts.items():
        cells = []
        for s in scopes:
            pair = []
            for b in ("tuned", "defaults"):
                row = rec["leaderboards"][s][b].get(key)
                text = "—" if row is None else f"{row['mean_rank']:.2f}"
                pair.append(f"[bold]{text}[/bold]" if rec["choice"][s][b] == key else text)
            cells.append(" / ".join(pair))
        table.add_row(f"[{o['color']}]■[/] {o['label']}", *cells)
    console.print(table)
    console.print(_winners(results, opts))
    console.print()
    console.print(f"[bold green]{rec['text'][0]}[/]")
    for line in rec["text"][1:]:
        console.print(f"  • {line}", highlight=False)
    t = results["timing"]
    index = Path(out) / "index.html"
    console.print(
        f"\n{t['runs']} runs, training {t['training_s']:.0f} s, figures {t['figures_s']:.0f} s, "
        f"landscapes {t['landscapes_s']:.0f} s; {elapsed:.0f} s in all. Report: {index}"
    )


def _winners(results: dict[str, Any], opts: dict[str, Any]):
    from rich.table import Table

    table = Table(title="Best tuned optimizer per task (mean validation loss ± std)", title_justify="left")
    table.add_column("task")
    regimes = [r for r in REGIME_LABELS if any(r in t["regimes"] for t in results["tasks"])]
    for r in regimes:
        table.add_column(REGIME_LABELS[r])
    for task in results["tasks"]:
        cells = []
        for r in regimes:
            studies = [s for s in results["studies"] if s["task"] == task["name"] and s["regime"] == r]
            scored = [s for s in studies if s["tuned"]["score"] is not None]
            if not scored:
                cells.append("—")
                continue
            best = min(scored, key=lambda s: s["tuned"]["score"])
            v = best["tuned"]["val_loss"]
            cells.append(f"{opts[best['optimizer']]['label']} {v['mean']:.3g}±{v['std']:.2g}")
        table.add_row(task["title"], *cells)
    return table
