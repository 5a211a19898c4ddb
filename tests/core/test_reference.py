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


def framework_momentum(lr, gamma):
    # 000 动量梯度下降, 001 §3, 002 动量法: V(t) = γV(t−1) + η∇J(θ);  θ = θ − V(t)
    def update(theta, g, s, t):
        V = gamma * s.get("V", np.zeros_like(theta)) + lr * g
        s["V"] = V
        return theta - V

    return update


def sgdm_code_as_printed(lr, momentum):
    # 000's SGDM.update exactly as printed: it re-creates v as zeros on every call
    # (self.grads read as the grads argument)
    def update(w, g, s, t):
        v = np.zeros_like(w)
        v = momentum * v - lr * g
        return w + v

    return update


def adagrad_eta_inside(lr, eps):
    # 002 自适应梯度Adagrad: g ← g + η·∇J²;  θ ← θ − η/√(g + ε)·∇J
    def update(theta, dJ, s, t):
        G = s.get("G", np.zeros_like(theta)) + lr * dJ**2
        s["G"] = G
        return theta - lr / np.sqrt(G + eps) * dJ

    return update


def adagrad_initial(lr, eps, g0):
    # optax's AdaGrad: the accumulator starts at G₀
    def update(w, g, s, t):
        G = s.get("G", np.full_like(w, g0)) + g * g
        s["G"] = G
        return w - lr * g / (np.sqrt(G) + eps)

    return update


def adam_without_eps(alpha, beta1, beta2):
    # 004 §3.3 (indices as Kingma & Ba): Δθ = α·m̂_t/√v̂_t, no ε
    def update(theta, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(theta)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(theta)) + (1 - beta2) * g**2
        s["m"], s["v"] = m, v
        return theta - alpha * (m / (1 - beta1**t)) / np.sqrt(v / (1 - beta2**t))

    return update


def ruder_nadam(lr, beta1, beta2, eps):
    # Ruder (2016) §4.8: θ ← θ − η/(√v̂ + ε)·(β₁·m̂_t + (1 − β₁)·g_t/(1 − β₁ᵗ))
    def update(theta, g, s, t):
        m = beta1 * s.get("m", np.zeros_like(theta)) + (1 - beta1) * g
        v = beta2 * s.get("v", np.zeros_like(theta)) + (1 - beta2) * g * g
        s["m"], s["v"] = m, v
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        return theta - lr / (np.sqrt(v_hat) + eps) * (beta1 * m_hat + (1 - beta1) * g / (1 - beta1**t))

    return update


def _plain_nadam(ps):
    from descent import rules

    Nadam = descent.compose(
        "Nadam",
        rules.NesterovEMA(schedule=False),
        rules.EMAOfSquares(),
        defaults={"betas": (0.9, 0.999), "eps": 1e-8},
    )
    return Nadam(ps, lr=0.01)


def _ruder_nadam(ps):
    from descent import rules

    RuderNadam = descent.compose(
        "RuderNadam",
        rules.NesterovEMA(schedule=False, next_correction=False),
        rules.EMAOfSquares(),
        defaults={"betas": (0.9, 0.999), "eps": 1e-8},
    )
    return RuderNadam(ps, lr=0.01)


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
    ("momentum, V form", lambda ps: descent.SGD(ps, lr=0.05, momentum=0.9), framework_momentum(0.05, 0.9)),
    ("heavy ball", lambda ps: descent.SGD(ps, lr=0.05, momentum=0.9), cs231n_momentum(0.05, 0.9)),
    ("SGDM code as printed", lambda ps: descent.SGD(ps, lr=0.05), sgdm_code_as_printed(0.05, 0.9)),
    (
        "AdaGrad, eta inside",
        lambda ps: descent.Adagrad(ps, lr=0.1**0.5, eps=1e-6 / 0.1, eps_inside=True),
        adagrad_eta_inside(0.1, 1e-6),
    ),
    (
        "AdaGrad, G0",
        lambda ps: descent.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1),
        adagrad_initial(0.1, 1e-10, 0.1),
    ),
    ("Adam without eps", lambda ps: descent.Adam(ps, lr=0.01, eps=0.0), adam_without_eps(0.01, 0.9, 0.999)),
    ("plain Nadam, exact", _plain_nadam, plain_nadam(0.01, 0.9, 0.999, 1e-8)),
    ("Nadam (Ruder)", _ruder_nadam, ruder_nadam(0.01, 0.9, 0.999, 1e-8)),
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
    rtol = 1e-6 if name == "plain Nadam" else 1e-12
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=1e-12)


def _per_tensor(factory, ps):
    opt = factory(ps)
    opt._engine.flat = False
    return opt


# --- the look-ahead forms: the gradient is taken at a point the note names ------------
A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])


def grad_f(w):
    """∇f for f(w) = ½·wᵀAw + Σ sin(w): not quadratic, so the point matters."""
    return A @ w + np.cos(w)


def nag_001(lr, gamma):
    # 001 §4: g_t = ∇J(θ − γ·m_{t−1});  m_t = γ·m_{t−1} + g_t;  θ_t = θ_{t−1} − η·m_t
    def update(theta, s):
        m = s.get("m", np.zeros_like(theta))
        m = gamma * m + grad_f(theta - gamma * m)
        s["m"] = m
        return theta - lr * m

    return update


def nesterov_003_ahead(lr, mu):
    # 003: x_ahead = x + mu*v;  v = mu*v - learning_rate*dx_ahead;  x += v
    def update(x, s):
        v = s.get("v", np.zeros_like(x))
        v = mu * v - lr * grad_f(x + mu * v)
        s["v"] = v
        return x + v

    return update


def nag_000(lr, beta1):
    # 000 NAG: g_t = ∇f(ω_t − η·m_{t−1}/√v_{t−1}) with 000's SGDM moments
    # (m_t = β₁·m_{t−1} + (1 − β₁)·g_t, v = I² as for SGD);  ω_{t+1} = ω_t − η·m_t
    def update(w, s):
        m = s.get("m", np.zeros_like(w))
        m = beta1 * m + (1 - beta1) * grad_f(w - lr * m / np.sqrt(1.0))
        s["m"] = m
        return w - lr * m

    return update


LOOKAHEAD = [
    (
        "NAG (001 §4)",
        lambda ps: descent.LookaheadNesterov(ps, lr=0.05, momentum=0.9, lookahead_lr=False),
        nag_001(0.05, 0.9),
    ),
    (
        "Nesterov x_ahead (003)",
        lambda ps: descent.LookaheadNesterov(ps, lr=0.05, momentum=0.9),
        nesterov_003_ahead(0.05, 0.9),
    ),
    (
        "NAG (000)",
        lambda ps: descent.LookaheadNesterov(ps, lr=0.05, momentum=0.9, ema=True, lookahead_momentum=False),
        nag_000(0.05, 0.9),
    ),
]


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize("case", LOOKAHEAD, ids=[c[0] for c in LOOKAHEAD])
def test_lookahead_matches_the_notes_formula(case, flat):
    name, factory, update = case
    w0 = np.array([2.0, -1.5, 0.7])
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = factory([p]) if flat else _per_tensor(factory, [p])
    At = torch.tensor(A)

    def closure():
        opt.zero_grad()
        loss = 0.5 * p @ At @ p + torch.sin(p).sum()
        loss.backward()
        return loss

    w, s = w0.copy(), {}
    ours, theirs = [], []
    for _ in range(STEPS):
        opt.step(closure)
        w = update(w, s)
        ours.append(p.detach().numpy().copy())
        theirs.append(w.copy())
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12, atol=1e-12)
    assert np.abs(theirs[-1] - w0).max() > 0.5  # the trajectory went somewhere


def test_every_conventions_row_names_a_test_here():
    """Each row of the table in docs/conventions.md ends with the id of a case above."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "conventions.md").read_text()
    table = doc.split("| Notes' formula |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    known = {c[0] for c in CASES} | {c[0] for c in LOOKAHEAD}
    assert len(rows) >= 20
    for row in rows:
        cell = row.rstrip(" |").rsplit("|", 1)[1]
        ids = re.findall(r"`([^`]+)`", cell)
        assert ids and all(i in known for i in ids), row
