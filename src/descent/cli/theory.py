"""``descent theory``: convergence rates on quadratics, measured against theory, and
Reddi et al.'s counterexample where Adam drifts away from the optimum and AMSGrad
does not."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .usage import UsageError, fail


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "theory",
        help="measured vs predicted rates of GD, heavy ball, Nesterov; Adam vs AMSGrad (Reddi 2018)",
        description=__doc__,
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--kappas", default="10,100,1000", help="condition numbers (default 10,100,1000)")
    return p


def _kappas(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        try:
            k = float(part)
        except ValueError:
            raise UsageError(f"invalid --kappas value {part.strip()!r}: expected numbers > 1") from None
        if not (1 < k < 1e12):
            raise UsageError(f"invalid --kappas value {part.strip()!r}: expected numbers > 1")
        out.append(int(k) if k.is_integer() else k)
    return out


def _table(report: dict[str, Any]) -> str:
    lines = [
        "Convergence rate ρ on f(x) = ½ xᵀ diag(1, κ) x  (‖x_k‖ ~ ρ^k; Lessard, Recht & Packard 2016)",
        "(error of ρ, and of 1 − ρ, the speed; steps: the run measured)",
        f"{'κ':>6}  {'method':<11} {'predicted':>10} {'measured':>10} "
        f"{'err ρ':>9} {'err 1−ρ':>9} {'steps':>6}",
    ]
    for r in report["rates"]:
        p, m = r["predicted"], r["measured"]
        lines.append(
            f"{r['kappa']:>6}  {r['method']:<11} {p:>10.6f} {m:>10.6f} "
            f"{(m - p) / p:>+9.4%} {(p - m) / (1 - p):>+9.3%} {r['steps']:>6}"
        )
    d = report["reddi"]
    lines += [
        "",
        f"Reddi, Kale & Kumar 2018: f_t(x) = {d['C']:g}x if t mod 3 = 1 else −x on [−1, 1] "
        f"(optimum x = −1), {d['steps']} steps, α_t = {d['lr']:g}/√t",
        f"  Adam    (β1 = 0, β2 = 1/(1+C²)) ends at x = {d['adam_final_x']:+.4f}",
        f"  AMSGrad (same)                  ends at x = {d['amsgrad_final_x']:+.4f}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        kappas = _kappas(args.kappas)
    except UsageError as exc:
        return fail("theory", exc)
    from ..landscapes import theory

    report = theory.report(kappas)
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0
