"""descent against the notes' own formulas, written plainly in NumPy (an independent
reference: no torch, no descent code), over 150 steps of random gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import descent

STEPS = 150


def _grads(seed=0, shape=(4, 3)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(STEPS)]


def _run_descent(opt_factory, w0, grads):
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = opt_factory([p])
    out = []
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        out.append(p.detach().numpy().copy())
    return np.array(out)


def _run_numpy(update, w0, grads):
    w = w0.copy()
    state: dict = {}
    out = []
    for t, g in enumerate(grads, start=1):
        w = update(w, g, state, t)
        out.append(w.copy())
    return np.array(out)


# --- the notes' snippets -------------------------------------------------------------


def vanilla(lr):
    def update(x, dx, s, t):
        x += -lr * dx
        return x

    return update


def cs231n_momentum(lr, mu):
    def update(x, dx, s, t):
        v = s.get("v", np.zeros_like(x))
        v = mu * v - lr * dx
        s["v"] = v
        return x + v

    return update


def cs231n_nesterov(lr, mu):
    def update(x, dx, s, t):
        v = s.get("v", np.zeros_like(x))
        v_prev = v
        v = mu * v - lr * dx
        s["v"] = v
        return x + (-mu * v_prev + (1 + mu) * v)

    return update


def notes_ema_momentum(lr, beta):
    # 000: m_t = β1·m_{t−1} + (1 − β1)·g_t,  w ← w − η·m_t
    def update(w, g, s, t):
        m = s.get("m", np.zeros_like(w))
        m = beta * m + (1 - beta) * g
        s["m"] = m
        return w - lr * m

    return update


def notes_adagrad(lr, eps=1e-7):
    # 000: h += g*g;  W -= lr * g / (sqrt(h) + 1e-7)
    def update(w, g, s, t):
        h = s.get("h", np.zeros_like(w))
        h = h + g * g
        s["h"] = h
        return w - lr * g / (np.sqrt(h) + eps)

    return update


def notes_adagrad_eps_inside(lr, eps):
    # 001: Δθ = −η/√(v_t + ε)·g_t,  v_t = v_{t−1} + g_t²
    def update(w, g, s, t):
        v = s.get("v", np.zeros_like(w)) + g * g
        s["v"] = v
        return w - lr / np.sqrt(v + eps) * g

    return update


def cs231n_rmsprop(lr, decay_rate, eps):
    def update(x, dx, s, t):
        cache = s.get("cache", np.zeros_like(x))
        cache = decay_rate * cache + (1 - decay_rate) * dx**2
        s["cache"] = cache
        return x - lr * dx / (np.sqrt(cache) + eps)

    return update


def cs231n_adam(lr, beta1, beta2, eps):
    # "t is your iteration counter going from 1 to infinity"
    def update(x, dx, s, t):
        m = s.get("m", np.zeros_like(x))
        v = s.get("v", np.zeros_like(x))
        m = beta1 * m + (1 - beta1) * dx
        mt = m / (1 - beta1**t)
        v = beta2 * v + (1 - beta2) * (dx**2)
        vt = v / (1 - beta2**t)
        s["m"], s["v"] = m, v
        return x - lr * mt / (np.sqrt(vt) + eps)

    return update


def zeiler_adadelta(rho, eps):
    # Zeiler 2012, Algorithm 1
    def update(x, g, s, t):
        eg2 = s.get("eg2", np.zeros_like(x))
        edx2 = s.get("edx2", np.zeros_like(x))
        eg2 = rho * eg2 + (1 - rho) * g**2
        dx = -np.sqrt(edx2 + eps) / np.sqrt(eg2 + eps) * g
        edx2 = rho * edx2 + (1 - rho) * dx**2
        s["eg2"], s["edx2"] = eg2, edx2
        return x + dx

    return update


def plain_nadam(lr, beta1, beta2, eps):
    # Adam with Nesterov momentum (Dozat 2016, no momentum schedule):
    # m̂ = β1·m_t/(1 − β1^{t+1}) + (1 − β1)·g_t/(1 − β1^t)
    def update(x, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(x)) + (1 - beta2) * g * g
        s["m"], s["v"] = m, v
        m_hat = beta1 * m / (1 - beta1 ** (t + 1)) + (1 - beta1) * g / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return x - lr * m_hat / (np.sqrt(v_hat) + eps)

    return update


def amsgrad(lr, beta1, beta2, eps):
    # Reddi et al. 2018 with Adam's bias corrections, as torch.optim and descent define it
    def update(x, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(x)) + (1 - beta2) * g * g
        vmax = np.maximum(s.get("vmax", np.zeros_like(x)), v)
        s["m"], s["v"], s["vmax"] = m, v, vmax
        return x - lr * (m / (1 - beta1**t)) / (np.sqrt(vmax / (1 - beta2**t)) + eps)

    return update


def adamax(lr, beta1, beta2, eps):
    # Kingma & Ba 2015, Algorithm 2 (ε keeps u_t > 0, as torch.optim puts it)
    def update(x, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * g
        u = np.maximum(beta2 * s.get("u", np.zeros_like(x)), np.abs(g) + eps)
        s["m"], s["u"] = m, u
        return x - (lr / (1 - beta1**t)) * m / u

    return update


def lion(lr, beta1, beta2, wd):
    # Chen et al. 2023, Algorithm 2
    def update(x, g, s, t):
        m = s.get("m", np.zeros_like(x))
        c = beta1 * m + (1 - beta1) * g
        x = x - lr * (np.sign(c) + wd * x)
        s["m"] = beta2 * m + (1 - beta2) * g
        return x

    return update


def radam(lr, beta1, beta2, eps):
    # Liu et al. 2020, Algorithm 2
    rho_inf = 2 / (1 - beta2) - 1

    def update(x, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(x)) + (1 - beta2) * g * g
        s["m"], s["v"] = m, v
        m_hat = m / (1 - beta1**t)
        rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho > 5:
            l = np.sqrt(1 - beta2**t) / (np.sqrt(v) + eps)
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return x - lr * m_hat * r * l
        return x - lr * m_hat

    return update


def rmsprop_eps_inside(lr, beta, eps):
    # 001 §6: v_t = β·v_{t−1} + (1 − β)·g²;  Δθ = −η/√(v_t + ε)·g
    def update(w, g, s, t):
        v = beta * s.get("v", np.zeros_like(w)) + (1 - beta) * g * g
        s["v"] = v
        return w - lr / np.sqrt(v + eps) * g

    return update


def adam_no_bias_correction(lr, beta1, beta2, eps):
    # 002, cs231n's first Adam snippet
    def update(x, dx, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * dx
        v = beta2 * s.get("v", np.zeros_like(x)) + (1 - beta2) * (dx**2)
        s["m"], s["v"] = m, v
        return x - lr * m / (np.sqrt(v) + eps)

    return update


def adam_eps_inside(lr, beta1, beta2, eps):
    # 001 §1: θ ← θ − η·m̂/√(v̂ + ε)
    def update(x, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(x)) + (1 - beta2) * g * g
        s["m"], s["v"] = m, v
        return x - lr * (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t) + eps)

    return update


def adamw(lr, beta1, beta2, eps, wd):
    # Loshchilov & Hutter 2019 (η-scaled decay, as torch.optim.AdamW)
    def update(x, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(x)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(x)) + (1 - beta2) * g * g
        s["m"], s["v"] = m, v
        return x * (1 - lr * wd) - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)

    return update


def ema_bias_corrected(lr, beta):
    def update(w, g, s, t):
        m = beta * s.get("m", np.zeros_like(w)) + (1 - beta) * g
        s["m"] = m
        return w - lr * m / (1 - beta**t)

    return update


def _adam0(ps):
    from descent import rules

    Adam0 = descent.compose(
        "Adam0",
        rules.EMA(bias_correction=False),
        rules.EMAOfSquares(bias_correction=False),
        defaults={"betas": (0.9, 0.999), "eps": 1e-8},
    )
    return Adam0(ps, lr=0.01)


CASES = [
    ("GD", lambda ps: descent.SGD(ps, lr=0.1), vanilla(0.1)),
    ("heavy ball", lambda ps: descent.SGD(ps, lr=0.05, momentum=0.9), cs231n_momentum(0.05, 0.9)),
    (
        "nesterov (cs231n)",
        lambda ps: descent.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        cs231n_nesterov(0.05, 0.9),
    ),
    ("EMA momentum", lambda ps: descent.EMAMomentum(ps, lr=0.05, beta=0.9), notes_ema_momentum(0.05, 0.9)),
    ("AdaGrad (notes)", lambda ps: descent.Adagrad(ps, lr=0.1, eps=1e-7), notes_adagrad(0.1)),
    (
        "AdaGrad, eps inside",
        lambda ps: descent.Adagrad(ps, lr=0.1, eps=1e-3, eps_inside=True),
        notes_adagrad_eps_inside(0.1, 1e-3),
    ),
    (
        "RMSProp (cs231n)",
        lambda ps: descent.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8),
        cs231n_rmsprop(0.01, 0.9, 1e-8),
    ),
    (
        "Adam (cs231n)",
        lambda ps: descent.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8),
        cs231n_adam(0.01, 0.9, 0.999, 1e-8),
    ),
    ("AdaDelta (Zeiler)", lambda ps: descent.Adadelta(ps, rho=0.95, eps=1e-6), zeiler_adadelta(0.95, 1e-6)),
    (
        "plain Nadam",
        lambda ps: descent.NAdam(ps, lr=0.01, momentum_decay=math.inf),
        plain_nadam(0.01, 0.9, 0.999, 1e-8),
    ),
    ("AMSGrad", lambda ps: descent.Adam(ps, lr=0.01, amsgrad=True), amsgrad(0.01, 0.9, 0.999, 1e-8)),
    ("Adamax", lambda ps: descent.Adamax(ps, lr=0.01), adamax(0.01, 0.9, 0.999, 1e-8)),
    ("RAdam", lambda ps: descent.RAdam(ps, lr=0.01), radam(0.01, 0.9, 0.999, 1e-8)),
    ("Lion", lambda ps: descent.Lion(ps, lr=0.01, weight_decay=0.5), lion(0.01, 0.9, 0.99, 0.5)),
    (
        "RMSProp, eps inside (001 §6)",
        lambda ps: descent.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-4, eps_inside=True),
        rmsprop_eps_inside(0.01, 0.9, 1e-4),
    ),
    ("Adam, no bias correction (compose)", _adam0, adam_no_bias_correction(0.01, 0.9, 0.999, 1e-8)),
    (
        "Adam, eps inside",
        lambda ps: descent.Adam(ps, lr=0.01, eps=1e-4, eps_inside=True),
        adam_eps_inside(0.01, 0.9, 0.999, 1e-4),
    ),
    ("AdamW", lambda ps: descent.AdamW(ps, lr=0.01, weight_decay=0.3), adamw(0.01, 0.9, 0.999, 1e-8, 0.3)),
    (
        "EMA momentum, bias-corrected",
        lambda ps: descent.EMAMomentum(ps, lr=0.05, beta=0.9, bias_correction=True),
        ema_bias_corrected(0.05, 0.9),
    ),
]


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_the_notes_formula(case, flat):
    name, factory, update = case
    grads = _grads()
    w0 = np.random.default_rng(1).standard_normal((4, 3))
    ours = _run_descent(lambda ps: factory(ps) if flat else _per_tensor(factory, ps), w0, grads)
    theirs = _run_numpy(update, w0, grads)
    # NAdam keeps the running product of μ as a float32 scalar, as torch.optim does (so
    # checkpoints are interchangeable); the plain formula's β^t is exact, hence 1e-6.
    rtol = 1e-6 if name == "plain Nadam" else 1e-9
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-12)


def _per_tensor(factory, ps):
    opt = factory(ps)
    opt._engine.flat = False
    return opt
