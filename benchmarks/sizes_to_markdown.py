"""Print a results JSON of ``descent bench --sizes`` as the Markdown tables of
docs/benchmarks.md.

python benchmarks/sizes_to_markdown.py benchmarks/results/cpu-sizes-2026-11-29.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def _by(report: dict) -> dict:
    by: dict = defaultdict(dict)
    for r in report["rows"]:
        by[(r["optimizer"], r["size"])][r["impl"]] = r
    return by


def matrix(report: dict) -> str:
    """Size × optimizer: descent's median speedup over torch.optim's best median."""
    by = _by(report)
    opts = list(dict.fromkeys(o for o, _ in by))
    sizes = list(dict.fromkeys(s for _, s in by))
    out = ["| params (tensors) | " + " | ".join(opts) + " |", "|---|" + "---|" * len(opts)]
    for size in sizes:
        any_row = next(iter(by[(opts[0], size)].values()))
        cells = []
        for o in opts:
            d = by[(o, size)].get("descent")
            cells.append(
                f"{d['speedup_vs_torch_best']:.2f}×" if d and d.get("speedup_vs_torch_best") else "–"
            )
        out.append(f"| {any_row['params']:,} ({any_row['tensors']}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def full(report: dict) -> str:
    impls = list(dict.fromkeys(r["impl"] for r in report["rows"] if r["median_ms"]))
    out = [
        "| optimizer | params | " + " | ".join(f"{i} ms" for i in impls) + " | descent vs torch best |",
        "|---|---|" + "---|" * len(impls) + "---|",
    ]
    for (opt, size), row in _by(report).items():
        cells = []
        for i in impls:
            r = row.get(i)
            cells.append(
                f"{r['median_ms']:.3g} [{r['min_ms']:.3g}–{r['max_ms']:.3g}]" if r and r["median_ms"] else "–"
            )
        d = row.get("descent", {})
        speed = f"{d['speedup_vs_torch_best']:.2f}×" if d.get("speedup_vs_torch_best") else "–"
        out.append(f"| {opt} | {size} | " + " | ".join(cells) + f" | {speed} |")
    return "\n".join(out)


def first_step(report: dict) -> str:
    """Per optimizer: torch.optim's and descent's first step over the sizes (smallest and
    largest), and descent's with an empty kernel cache."""
    by: dict = defaultdict(lambda: defaultdict(dict))
    for f in report["first_step"]:
        by[f["optimizer"]][(f["impl"], f["cache"])][f["size"]] = f
    sizes = list(dict.fromkeys(f["size"] for f in report["first_step"]))
    if not sizes:
        return "(first steps not measured in this run)"
    lo, hi = sizes[0], sizes[-1]

    def ms(rows: dict, size: str) -> str:
        f = rows.get(size)
        return f"{f['seconds'] * 1e3:.0f} ms" if f else "–"

    out = [
        f"| optimizer | torch.optim, {lo} / {hi} | descent, kernel cached, {lo} / {hi} "
        f"| descent, empty cache, {lo} | its kernel in use after |",
        "|---|---|---|---|---|",
    ]
    for opt, c in by.items():
        t, w, cold = c.get(("torch", "-"), {}), c.get(("descent", "warm"), {}), c.get(("descent", "cold"), {})
        first = cold.get(lo)
        after = f"{first['kernel_after_s']:.1f} s ({first['eager_steps']:,} eager steps)" if first else "–"
        out.append(
            f"| {opt} | {ms(t, lo)} / {ms(t, hi)} | {ms(w, lo)} / {ms(w, hi)} | {ms(cold, lo)} | {after} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    report = json.loads(Path(sys.argv[1]).read_text())
    print(
        f"{report['device']}, torch {report['torch']}, Python {report['python']}, "
        f"{report['threads']} threads, {report['date']}; median of {report['rounds']} alternated rounds"
    )
    for part in (matrix, full, first_step):
        print()
        print(part(report))
