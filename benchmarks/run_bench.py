"""Run ``descent bench`` and keep the result: JSON under benchmarks/results/, named by
device and date, for docs/benchmarks.md to cite.

    python benchmarks/run_bench.py                 # every optimizer, default layouts
    python benchmarks/run_bench.py --optimizers adam,rmsprop --repeat 20
    python benchmarks/run_bench.py --sizes         # the size sweep → <device>-sizes-<date>.json
    python benchmarks/run_bench.py --fsdp          # the step under FSDP2 → <device>-fsdp-<date>.json
    python benchmarks/run_bench.py --sizes --fresh # new grads every step → <device>-sizes-fresh-<date>.json
    python benchmarks/run_bench.py --loop          # whole training loops → <device>-loop-<date>.json
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path

import torch

from descent.cli.main import main

if __name__ == "__main__":
    device = "cuda" if torch.cuda.is_available() and "--device" not in sys.argv else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    kind = next((f"-{k}" for k in ("sizes", "fsdp", "loop") if f"--{k}" in sys.argv), "")
    kind += "-fresh" if "--fresh" in sys.argv else ""
    out = Path(__file__).parent / "results" / f"{slug}{kind}-{datetime.date.today().isoformat()}.json"
    sys.exit(main(["bench", "--out", str(out), *sys.argv[1:]]))
