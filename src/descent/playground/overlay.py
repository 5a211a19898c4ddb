"""Theory beside the measurement on the quadratic: the textbook rates of gradient
descent, heavy ball and Nesterov with their optimal (α, β), from
:mod:`descent.landscapes.theory`, and each run's rate measured from its path.

The playground's quadratic is ``u²/κ + v²`` (turned by an angle or not), whose Hessian
has eigenvalues μ = 2/κ and L = 2: theory's ``½ xᵀ diag(μ, L) x`` with μ = 2/κ, so its
tunings are read with ``mu = 2/κ``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import optim
from ..landscapes import theory
from .simulate import Trace

#: The measured rate needs this many steps of a path still above the floor.
MIN_POINTS = 8
#: As in ``theory.trace_norms``: below this the distance no longer says anything.
FLOOR = 1e-100


def curvatures(kappa: float) -> tuple[float, float]:
    """The quadratic's Hessian eigenvalues (μ, L) = (2/κ, 2)."""
    return 2.0 / kappa, 2.0


def methods(kappa: float) -> list[dict[str, Any]]:
    """Each method's optimal step size, momentum and worst-case rate at ``kappa``."""
    mu, _ = curvatures(kappa)
    out = []
    for method in theory.METHODS:
        t = theory.tuning(method, kappa, mu=mu)
        out.append(
            {
                "method": method,
                "label": theory.LABELS[method],
                "lr": t.lr,
                "momentum": t.momentum,
                "nesterov": t.nesterov,
                "rate": t.predicted,
            }
        )
    return out


def method_of(trace: Trace) -> str | None:
    """Which of theory's methods a run is: descent.SGD without weight decay or
    dampening is gradient descent, heavy ball or Nesterov by its momentum settings."""
    entry = trace.spec.entry
    if not issubclass(entry.cls, optim.SGD):
        return None
    s = {**entry.defaults, **trace.spec.kwargs}
    if s.get("weight_decay") or s.get("dampening") or s.get("maximize"):
        return None
    if not s.get("momentum"):
        return "gd"
    return "nag" if s.get("nesterov") else "heavy_ball"


def predicted(trace: Trace, kappa: float) -> float | None:
    """The rate theory gives this run's own (α, β): the iteration's spectral radius over
    the quadratic's two curvatures (None for methods theory does not cover)."""
    method = method_of(trace)
    if method is None:
        return None
    s = {**trace.spec.entry.defaults, **trace.spec.kwargs}
    return theory.rate_at(s["lr"], s.get("momentum", 0.0), bool(s.get("nesterov")), curvatures(kappa))


def measured(trace: Trace) -> float | None:
    """The rate of the run's distance to the minimum, ``theory.fit_rate``'s fit over
    the late half of the path (None if it stopped, or too few points)."""
    if trace.stopped_at is not None:
        return None
    norms = np.linalg.norm(trace.xy[1:], axis=1)
    below = np.flatnonzero(~(norms >= FLOOR))
    if len(below):
        norms = norms[: below[0]]
    if len(norms) < MIN_POINTS:
        return None
    rate = theory.fit_rate(envelope(norms))
    return rate if math.isfinite(rate) else None


def envelope(norms: np.ndarray) -> np.ndarray:
    """The distances' upper envelope: a path that spirals in (complex eigenvalues: heavy
    ball with a large β) has ‖x_k‖ ∝ ρ^k·|cos(kω + φ)|, whose dips would bend a fit of
    log‖x_k‖; the envelope keeps the peaks, ρ^k. A decreasing sequence is its own
    envelope (the largest distance from k on), a growing one too (the largest up to k)."""
    if norms[-1] <= norms[len(norms) // 2]:
        return np.maximum.accumulate(norms[::-1])[::-1]
    return np.maximum.accumulate(norms)


def overlay(kappa: float, traces: list[Trace]) -> dict[str, Any]:
    """The theory panel of the quadratic: the methods' optimal settings and rates, and
    per run the rate measured and (for GD / heavy ball / Nesterov) the rate predicted
    at its own setting."""
    mu, L = curvatures(kappa)
    return {
        "kappa": kappa,
        "curvatures": [mu, L],
        "methods": methods(kappa),
        "runs": [
            {"method": method_of(t), "predicted": predicted(t, kappa), "measured": measured(t)}
            for t in traces
        ],
    }
