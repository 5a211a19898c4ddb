"""Print a results JSON of ``descent bench --loop`` as the Markdown tables of
docs/benchmarks.md: ms/iteration against torch's fused step, and each contender's peak
memory against torch fused in the same loop (the step inside backward against torch
fused's default loop, ``set_to_none``).

python benchmarks/loop_to_markdown.py benchmarks/results/cpu-loop-2026-12-02.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def tables(report: dict) -> str:
    by: dict = defaultdict(dict)
    for r in report["rows"]:
        if r["median_ms"] is not None:
            by[(r["model"], r["variant"])][r["impl"]] = r
    impls = list(dict.fromkeys(r["impl"] for r in report["rows"] if r["median_ms"] is not None))
    head = "| model | loop | " + " | ".join(impls) + " |"
    rule = "|---|---|" + "---|" * len(impls)
    time, mem = [head, rule], [head, rule]
    for (model, variant), row in by.items():
        base = by[(model, "set_to_none" if variant == "in_backward" else variant)].get("torch-fused")
        tcells, mcells = [], []
        for impl in impls:
            r = row.get(impl)
            if r is None:
                tcells.append("–")
                mcells.append("–")
                continue
            speed = f" ({base['median_ms'] / r['median_ms']:.2f}×)" if base and impl != "torch-fused" else ""
            tcells.append(f"{r['median_ms']:.1f} [{r['min_ms']:.1f}–{r['max_ms']:.1f}]{speed}")
            if r.get("peak_rss_mb") is None:
                mcells.append("–")
            elif base and base.get("peak_rss_mb") is not None and impl != "torch-fused":
                mcells.append(f"{r['peak_rss_mb']:,.0f} ({r['peak_rss_mb'] - base['peak_rss_mb']:+,.0f})")
            else:
                mcells.append(f"{r['peak_rss_mb']:,.0f}")
        time.append(f"| {model} | {variant} | " + " | ".join(tcells) + " |")
        mem.append(f"| {model} | {variant} | " + " | ".join(mcells) + " |")
    return (
        "ms/iteration, median [min–max] (× torch fused):\n\n"
        + "\n".join(time)
        + ("\n\npeak resident memory, MB (± torch fused):\n\n" + "\n".join(mem))
    )


if __name__ == "__main__":
    report = json.loads(Path(sys.argv[1]).read_text())
    print(
        f"{report['device']}, torch {report['torch']}, Python {report['python']}, "
        f"{report['threads']} threads, {report['date']}; {report['optimizer']}; "
        f"median of {report['rounds']} alternated rounds"
    )
    print()
    print(tables(report))
