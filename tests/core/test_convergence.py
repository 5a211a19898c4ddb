"""Every optimizer reaches the minimum of a parabola and of Rosenbrock's valley.

Stated tolerances: the parabola ½(x² + 10y²) from (3, −2) to ‖w‖ ≤ 1e-5 in 1,000 steps;
Rosenbrock (1 − x)² + 100(y − x²)² from (−1.2, 1) to ‖w − (1, 1)‖ ≤ 2e-2. Settings
(lr, a cosine schedule or not, steps) are per optimizer, as a user would tune them.
"""

from __future__ import annotations

import pytest
import torch

import descent

P = torch.tensor([1.0, 10.0], dtype=torch.float64)


def parabola_grad(w):
    return P * w


def rosenbrock_grad(w):
    x, y = w[0], w[1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def descend(make, grad, start, steps, cosine):
    w = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = make([w])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    for _ in range(steps):
        w.grad = grad(w.detach())
        opt.step()
        if sched:
            sched.step()
    return w.detach()


def _m(cls, **fixed):
    return lambda lr: lambda ps: cls(ps, lr=lr, **fixed)


OPTIMIZERS = {
    "SGD": _m(descent.SGD),
    "Momentum": _m(descent.SGD, momentum=0.9),
    "Nesterov": _m(descent.SGD, momentum=0.9, nesterov=True),
    "Adagrad": _m(descent.Adagrad),
    "RMSprop": _m(descent.RMSprop),
    "Adadelta": _m(descent.Adadelta, rho=0.95),
    "Adam": _m(descent.Adam),
    "AdamW": _m(descent.AdamW, weight_decay=0.0),
    "NAdam": _m(descent.NAdam),
    "Adamax": _m(descent.Adamax),
    "RAdam": _m(descent.RAdam, betas=(0.9, 0.99)),
    "AMSGrad": _m(descent.Adam, amsgrad=True),
    "Lion": _m(descent.Lion),
    "EMAMomentum": _m(descent.EMAMomentum),
}

# name: (lr, cosine, steps)
PARABOLA = {
    "SGD": (0.1, False, 1000),
    "Momentum": (0.03, False, 1000),
    "Nesterov": (0.1, False, 1000),
    "Adagrad": (1.0, False, 1000),
    "RMSprop": (0.1, True, 1000),
    "Adadelta": (3.0, True, 1000),
    "Adam": (0.3, False, 1000),
    "AdamW": (0.3, False, 1000),
    "NAdam": (0.3, False, 1000),
    "Adamax": (0.1, False, 1000),
    "RAdam": (0.1, False, 1000),
    "AMSGrad": (0.3, False, 1000),
    "Lion": (0.1, True, 1000),
    "EMAMomentum": (0.3, False, 1000),
}
ROSENBROCK = {
    "SGD": (2e-3, False, 5000),
    "Momentum": (3e-3, False, 3000),
    "Nesterov": (1e-3, False, 3000),
    "Adagrad": (1.0, False, 5000),
    "RMSprop": (1e-2, True, 5000),
    "Adadelta": (1.0, True, 5000),
    "Adam": (0.3, True, 3000),
    "AdamW": (0.03, False, 5000),
    "NAdam": (0.03, True, 5000),
    "Adamax": (0.3, False, 3000),
    "RAdam": (2e-3, True, 5000),
    "AMSGrad": (0.3, False, 3000),
    "Lion": (1e-2, True, 3000),
    "EMAMomentum": (0.03, False, 3000),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_parabola(name):
    lr, cosine, steps = PARABOLA[name]
    w = descend(OPTIMIZERS[name](lr), parabola_grad, [3.0, -2.0], steps, cosine)
    assert w.norm().item() <= 1e-5


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rosenbrock(name):
    lr, cosine, steps = ROSENBROCK[name]
    w = descend(OPTIMIZERS[name](lr), rosenbrock_grad, [-1.2, 1.0], steps, cosine)
    assert (w - 1).norm().item() <= 2e-2


def test_lookahead_nesterov_reaches_rosenbrock_minimum():
    w = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=torch.float64))
    opt = descent.LookaheadNesterov([w], lr=1e-3, momentum=0.9)

    def closure():
        opt.zero_grad()
        x, y = w[0], w[1]
        loss = (1 - x) ** 2 + 100 * (y - x * x) ** 2
        loss.backward()
        return loss

    for _ in range(3000):
        opt.step(closure)
    assert (w.detach() - 1).norm().item() <= 2e-2
