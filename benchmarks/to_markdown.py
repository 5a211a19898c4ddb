"""Print a results JSON of ``descent bench`` as the Markdown tables of docs/benchmarks.md.

python benchmarks/to_markdown.py benchmarks/results/cpu-2026-11-22.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def table(report: dict) -> str:
    rows = defaultdict(dict)
    for r in report["results"]:
        rows[(r["optimizer"], r["layout"])][r["impl"]] = r
    impls = ["descent", "descent-eager", "torch-forloop", "torch-foreach", "torch-fused"]
    out = [
        "| optimizer | layout | B/param | "
        + " | ".join(f"{i} ms" for i in impls)
        + " | descent GB/s (% copy) | descent vs torch best |",
        "|---|---|---|" + "---|" * len(impls) + "---|---|",
    ]
    for (opt, layout), by in rows.items():
        d = by["descent"]
        cells = [f"{by[i]['ms']:.1f}" if by.get(i) and by[i]["ms"] else "–" for i in impls]
        speed = f"{d['speedup_vs_torch_best']:.2f}×" if d.get("speedup_vs_torch_best") else "–"
        gbps = f"{d['gbps']:.1f} ({d['pct_copy']:.0f} %)" if d["ms"] else "–"
        out.append(
            f"| {opt} | {layout} | {d['bytes_per_param']} | " + " | ".join(cells) + f" | {gbps} | {speed} |"
        )
    return "\n".join(out)


def first_step(report: dict) -> str:
    out = ["| optimizer | layout | cold cache (s) | warm cache (s) |", "|---|---|---|---|"]
    by = defaultdict(dict)
    for f in report["first_step"]:
        by[(f["optimizer"], f["layout"])][f["cache"]] = f["seconds"]
    for (opt, layout), c in by.items():
        out.append(
            f"| {opt} | {layout} | {c.get('cold', float('nan')):.1f} | {c.get('warm', float('nan')):.1f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    report = json.loads(Path(sys.argv[1]).read_text())
    print(
        f"{report['device']}, torch {report['torch']}, Python {report['python']}, "
        f"{report['threads']} threads, {report['date']}; copy bandwidth "
        + ", ".join(f"{k} {v:.1f} GB/s" for k, v in report["copy_gbps"].items())
    )
    print()
    print(table(report))
    if report.get("first_step"):
        print()
        print(first_step(report))
