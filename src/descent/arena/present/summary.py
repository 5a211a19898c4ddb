"""The terminal summary at the end of ``descent arena``: mean ranks by regime and
budget, each problem's winner, and the recommendation with its reasons — all read from
a :class:`~descent.arena.records.Results`."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..records import BUDGETS, Results
from ..tasks.data import REGIME_LABELS


def print_summary(results: Results, out: str | os.PathLike, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rec = results.recommendation
    scopes = list(rec.leaderboards)
    table = Table(title="Mean rank (1 = best) by data regime: tuned / defaults", title_justify="left")
    table.add_column("optimizer")
    for s in scopes:
        table.add_column("all problems" if s == "all" else REGIME_LABELS.get(s, s), justify="right")
    for o in results.optimizers:
        cells = []
        for s in scopes:
            pair = []
            for b in BUDGETS:
                row = rec.leaderboards[s][b].get(o.key)
                text = "—" if row is None else f"{row.mean_rank:.2f}"
                pair.append(f"[bold]{text}[/bold]" if getattr(rec.choice[s], b) == o.key else text)
            cells.append(" / ".join(pair))
        table.add_row(f"[{o.color}]■[/] {o.label}", *cells)
    console.print(table)
    console.print(_winners(results))
    console.print()
    console.print(f"[bold green]{rec.text[0]}[/]")
    for line in rec.text[1:]:
        console.print(f"  • {line}", highlight=False)
    t = results.timing
    index = Path(out) / "index.html"
    console.print(
        f"\n{t.runs} runs, training {t.training_s:.0f} s, figures {t.figures_s:.0f} s, "
        f"landscapes {t.landscapes_s:.0f} s; {elapsed:.0f} s in all. Report: {index}"
    )


def _winners(results: Results):
    from rich.table import Table

    table = Table(title="Best tuned optimizer per task (mean validation loss ± std)", title_justify="left")
    table.add_column("task")
    regimes = [r for r in REGIME_LABELS if any(r in t.regimes for t in results.tasks)]
    for r in regimes:
        table.add_column(REGIME_LABELS[r])
    for task in results.tasks:
        cells = []
        for r in regimes:
            studies = results.studies_of(task.name, r)
            best = min(studies, key=lambda s: s.tuned.rank_score, default=None)
            if best is None or not math.isfinite(best.tuned.rank_score) or best.tuned.val_loss is None:
                cells.append("—")
                continue
            v = best.tuned.val_loss
            cells.append(f"{results.optimizer(best.optimizer).label} {v.mean:.3g}±{v.std:.2g}")
        table.add_row(task.title, *cells)
    return table
