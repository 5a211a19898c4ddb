r"""Theory, measured: convergence rates on quadratics, and Adam's non-convergence.

Rates (Lessard, Recht & Packard 2016, §2 and Table 1). On
:math:`f(x) = \tfrac12 x^\top \operatorname{diag}(\mu, L)\,x` with :math:`\kappa = L/\mu`:

============  ==================================  ==========================================
method        tuning                              predicted rate :math:`\rho`
============  ==================================  ==========================================
gd            α = 2/(L+μ)                         (κ−1)/(κ+1)
heavy_ball    α = 4/(√L+√μ)², β = ρ²              (√κ−1)/(√κ+1)
nag           α = 4/(3L+μ), β = (s−2)/(s+2)       1 − 2/s,  s = √(3κ+1)
============  ==================================  ==========================================

Each method runs through :class:`descent.SGD` in float64 (heavy ball is
``SGD(momentum=β)``; Nesterov's method is ``SGD(momentum=β, nesterov=True)``, whose
parameters hold Nesterov's look-ahead sequence :math:`y_k`). The measured rate is
:math:`e^{b}` from a least-squares fit :math:`\log\lVert x_k\rVert = a + b\,k + c\log k`
over the second half of the run. The :math:`c\log k` term is there because the tuned
heavy ball and Nesterov iterations have a *double* eigenvalue at the extreme curvatures
(a Jordan block), so :math:`\lVert x_k\rVert \propto k\,\rho^k`; a plain slope would read
that factor :math:`k` as a slightly slower rate. :func:`spectral_radius` gives the
independent reference: the largest eigenvalue modulus of each method's iteration matrix.

Reddi, Kale & Kumar (2018), Theorem 1: on :math:`x \in [-1, 1]` the online losses are
:math:`f_t(x) = Cx` when :math:`t \bmod 3 = 1`, else :math:`-x` (so the best point is
:math:`x = -1`). Adam with :math:`\beta_1 = 0`, :math:`\beta_2 = 1/(1+C^2)` and
:math:`\alpha_t = \alpha/\sqrt t` (a ``LambdaLR`` on :class:`descent.Adam`), projected onto
:math:`[-1, 1]` after each step, drifts to :math:`+1`; AMSGrad (``amsgrad=True``) goes to
:math:`-1`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import optim

METHODS = ("gd", "heavy_ball", "nag")
KAPPAS = (10, 100, 1000)
LABELS = {"gd": "gradient descent", "heavy_ball": "heavy ball", "nag": "Nesterov"}


@dataclass(frozen=True)
class Tuning:
    """The textbook tuning of one method for curvatures in [mu, L]."""

    lr: float
    momentum: float
    nesterov: bool
    predicted: float


def tuning(method: str, kappa: float, mu: float = 1.0) -> Tuning:
    """Lessard–Recht–Packard's step size, momentum and rate for ``method`` at ``kappa``."""
    L = kappa * mu
    sk = math.sqrt(kappa)
    if method == "gd":
        return Tuning(2 / (L + mu), 0.0, False, (kappa - 1) / (kappa + 1))
    if method == "heavy_ball":
        rho = (sk - 1) / (sk + 1)
        return Tuning(4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, rho**2, False, rho)
    if method == "nag":
        s = math.sqrt(3 * kappa + 1)
        return Tuning(4 / (3 * L + mu), (s - 2) / (s + 2), True, 1 - 2 / s)
    raise ValueError(f"Unknown method {method!r}; choose from: {', '.join(METHODS)}")


def iteration_matrix(method: str, kappa: float, lam: float, mu: float = 1.0) -> np.ndarray:
    """The 2×2 linear map (x_k, x_{k-1}) → (x_{k+1}, x_k) on the eigen-direction of
    curvature ``lam``, written from each method's textbook form (not from torch's)."""
    t = tuning(method, kappa, mu)
    return step_matrix(t.lr, t.momentum, t.nesterov, lam)


def step_matrix(lr: float, momentum: float, nesterov: bool, lam: float) -> np.ndarray:
    """The same map for any step size α = ``lr`` and momentum β."""
    a, b = lr, momentum
    if nesterov:
        # x_{k+1} = y_k − α λ y_k,  y_k = x_k + β (x_k − x_{k−1})
        c = 1 - a * lam
        return np.array([[(1 + b) * c, -b * c], [1.0, 0.0]])
    # heavy ball (gd is β = 0): x_{k+1} = x_k − α λ x_k + β (x_k − x_{k−1})
    return np.array([[1 + b - a * lam, -b], [1.0, 0.0]])


def rate_at(lr: float, momentum: float, nesterov: bool, curvatures: tuple[float, ...]) -> float:
    """The asymptotic rate of GD / heavy ball / Nesterov at any setting on a quadratic
    whose Hessian has eigenvalues ``curvatures``: the largest eigenvalue modulus of the
    iteration over them (above 1: it diverges)."""
    return max(
        float(np.abs(np.linalg.eigvals(step_matrix(lr, momentum, nesterov, lam))).max()) for lam in curvatures
    )


def spectral_radius(method: str, kappa: float, mu: float = 1.0, points: int = 401) -> float:
    """Worst eigenvalue modulus of the iteration over curvatures in [mu, kappa·mu]."""
    lams = mu * np.concatenate([[1.0, kappa], np.linspace(1.0, kappa, points)])
    return max(float(np.abs(np.linalg.eigvals(iteration_matrix(method, kappa, x, mu))).max()) for x in lams)


def trace_norms(method: str, kappa: float, max_steps: int = 1200, floor: float = 1e-100) -> np.ndarray:
    """‖x_k‖ for k = 1 … on the quadratic diag(1, κ) from x_0 = (1, 1), run by descent.SGD
    until ‖x_k‖ < floor (float64 keeps going long before that underflows)."""
    t = tuning(method, kappa)
    lam = torch.tensor([1.0, float(kappa)], dtype=torch.float64)
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = optim.SGD([x], lr=t.lr, momentum=t.momentum, nesterov=t.nesterov)
    xs = torch.empty(max_steps, 2, dtype=torch.float64)
    x.grad = torch.zeros_like(x)
    with torch.no_grad():
        for k in range(max_steps):
            # ∇(½ xᵀΛx) = Λx, written into the optimizer's own gradient buffer.
            torch.mul(lam, x, out=x.grad)
            opt.step()
            xs[k] = x
            if k % 64 == 63 and float(torch.linalg.vector_norm(x)) < floor:
                break
    norms = torch.linalg.vector_norm(xs[: k + 1], dim=1).numpy()
    below = np.flatnonzero(norms < floor)
    return norms[: below[0] + 1] if len(below) else norms


def fit_rate(norms: np.ndarray) -> float:
    """Asymptotic rate from ‖x_k‖: fit log‖x_k‖ = a + b·k + c·log k on the late half."""
    k = np.arange(1, len(norms) + 1, dtype=np.float64)
    lo = len(norms) // 2
    A = np.stack([np.ones(len(k) - lo), k[lo:], np.log(k[lo:])], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.log(norms[lo:]), rcond=None)
    return float(math.exp(coef[1]))


@dataclass(frozen=True)
class Rate:
    method: str
    kappa: int
    predicted: float
    measured: float
    #: the iteration matrix's spectral radius, a second reference for ``predicted``
    spectral: float
    steps: int


def measure_rate(method: str, kappa: int) -> Rate:
    norms = trace_norms(method, kappa)
    return Rate(
        method,
        kappa,
        tuning(method, kappa).predicted,
        fit_rate(norms),
        spectral_radius(method, kappa),
        len(norms),
    )


def measure_rates(kappas=KAPPAS, methods=METHODS) -> list[Rate]:
    return [measure_rate(m, k) for k in kappas for m in methods]


# -- Reddi, Kale & Kumar (2018) -----------------------------------------------------------
def reddi_run(amsgrad: bool, C: float = 3.0, steps: int = 999, lr: float = 0.5, x0: float = 0.0) -> float:
    """Final x of projected online Adam (or AMSGrad) on Reddi et al.'s sequence.

    ``steps`` is a multiple of 3 so the run ends after whole periods of the sequence.
    """
    if C <= 2:
        raise ValueError(f"Invalid C: {C} (the counterexample needs C > 2)")
    x = torch.tensor([x0], dtype=torch.float64, requires_grad=True)
    opt = optim.Adam([x], lr=lr, betas=(0.0, 1 / (1 + C * C)), amsgrad=amsgrad)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / math.sqrt(t + 1))
    for t in range(1, steps + 1):
        opt.zero_grad()
        loss = C * x if t % 3 == 1 else -x
        loss.sum().backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(-1.0, 1.0)
    return float(x.item())


@dataclass(frozen=True)
class Reddi:
    adam_final_x: float
    amsgrad_final_x: float
    C: float
    steps: int
    lr: float


def measure_reddi(C: float = 3.0, steps: int = 999, lr: float = 0.5) -> Reddi:
    return Reddi(reddi_run(False, C, steps, lr), reddi_run(True, C, steps, lr), C, steps, lr)


def report(kappas=KAPPAS) -> dict:
    """Everything ``descent theory --json`` prints."""
    rates = measure_rates(kappas)
    return {
        "rates": [asdict(r) for r in rates],
        "reddi": asdict(measure_reddi()),
    }
