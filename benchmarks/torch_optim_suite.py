"""PyTorch's own optimizer tests (``TestOptimRenewed`` in pytorch's test/test_optim.py)
run against descent's classes, next to torch.optim's own run, on the CPU.

test_optim.py is not in the torch wheel: pass the path of a copy (the one matching your
torch). Its ``optim_db`` is narrowed to the optimizers descent rewrites, and for the
descent run each entry's class is swapped for descent's class of the same name; the
tests themselves are untouched. The report counts passes and failures of each run and
lists every test that passes for torch.optim and fails for descent, with the first line
of its error.

    python benchmarks/torch_optim_suite.py /path/to/pytorch/test/test_optim.py
    python benchmarks/torch_optim_suite.py test_optim.py --json out.json -k "test_errors"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from collections import Counter
from pathlib import Path

#: torch.optim classes that descent rewrites (same names)
NAMES = (
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Adam",
    "AdamW",
    "NAdam",
    "Adamax",
    "RAdam",
    "Muon",
    "Adafactor",
)


def _stub_siblings() -> None:
    """test_optim.py imports three sibling test modules from pytorch's test/optim/; their
    classes are not part of TestOptimRenewed, so empty stand-ins do."""
    package = types.ModuleType("optim")
    package.__path__ = []  # type: ignore[attr-defined]
    sys.modules["optim"] = package
    for module, cls in (
        ("test_lrscheduler", "TestLRScheduler"),
        ("test_optim", "TestDifferentiableOptimizer"),
        ("test_swa_utils", "TestSWAUtils"),
    ):
        mod = types.ModuleType(f"optim.{module}")
        setattr(mod, cls, type(cls, (), {}))
        sys.modules[f"optim.{module}"] = mod


def _point_db(impl: str) -> None:
    from torch.testing._internal import common_optimizers

    db = common_optimizers.optim_db
    db[:] = [info for info in db if info.name in NAMES]
    if impl == "descent":
        import descent

        for info in db:
            info.optim_cls = getattr(descent, info.name)


class _Collector:
    def __init__(self) -> None:
        self.results: dict[str, dict] = {}

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001 (pytest's hook)
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        name = report.nodeid.split("::")[-1]
        error = ""
        if report.failed:
            text = str(report.longrepr)
            lines = [line for line in text.splitlines() if line.startswith("E ")]
            error = (lines[0][1:].strip() if lines else text.splitlines()[-1])[:300]
        self.results[name] = {"outcome": report.outcome, "error": error}


def run(path: str, impl: str, select: str | None) -> dict[str, dict]:
    """One run in this process: every test of ``path``'s TestOptimRenewed on the CPU."""
    import pytest

    os.environ.setdefault("DESCENT_BUILD", "0")
    _stub_siblings()
    _point_db(impl)
    collector = _Collector()
    args = [
        path,
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        f"TestOptimRenewedCPU{' and ' + select if select else ''}",
    ]
    pytest.main(args, plugins=[collector])
    return collector.results


def _cause(error: str, test: str) -> str:
    """A short label for why a test failed (for the counts by cause)."""
    for needle, label in (
        ("differentiable", "differentiable=True"),
        ("1-element", "tensor-lr error wording"),
        ("both floats or both Tensors", "mixed float/Tensor betas accepted"),
        ("sparse", "sparse gradients"),
        ("fused", "fused=True on an unsupported device"),
    ):
        if needle in error or needle in test:
            return label
    return "other: " + error.split(":")[0][:80]


def compare(torch_run: dict, descent_run: dict) -> dict:
    both = sorted(set(torch_run) | set(descent_run))
    torch_passed = [t for t in both if torch_run.get(t, {}).get("outcome") == "passed"]
    lost = [t for t in torch_passed if descent_run.get(t, {}).get("outcome") != "passed"]
    return {
        "torch": dict(Counter(r["outcome"] for r in torch_run.values())),
        "descent": dict(Counter(r["outcome"] for r in descent_run.values())),
        "passed_by_torch": len(torch_passed),
        "passed_by_both": len(torch_passed) - len(lost),
        "failed_for_descent_only": {t: descent_run.get(t, {}).get("error", "not run") for t in lost},
        "by_cause": dict(Counter(_cause(descent_run.get(t, {}).get("error", ""), t) for t in lost)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", help="pytorch's test/test_optim.py")
    parser.add_argument("--impl", choices=("torch", "descent", "both"), default="both")
    parser.add_argument("-k", dest="select", help="pytest -k expression within TestOptimRenewedCPU")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--raw", help=argparse.SUPPRESS)  # one run's results (child process)
    args = parser.parse_args(argv)
    path = str(Path(args.path).resolve())
    if args.impl != "both":
        results = run(path, args.impl, args.select)
        Path(args.raw or args.json or "/dev/stdout").write_text(json.dumps(results, indent=1))
        return 0
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("torch", "descent"):  # separate processes: the swap is process-wide
            raw = Path(tmp) / f"{impl}.json"
            cmd = [sys.executable, __file__, path, "--impl", impl, "--raw", str(raw)]
            subprocess.run([*cmd, *(["-k", args.select] if args.select else [])], check=False)
            runs[impl] = json.loads(raw.read_text())
    report = compare(runs["torch"], runs["descent"])
    import torch

    report["torch_version"] = torch.__version__
    print(json.dumps({k: v for k, v in report.items() if k != "failed_for_descent_only"}, indent=1))
    for test, error in report["failed_for_descent_only"].items():
        print(f"  {test}: {error}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
