"""The notes' interface: ``opt.update(params, grads)`` on dicts of NumPy arrays,
against the notes' NumPy classes written out here."""

from __future__ import annotations

import numpy as np
import pytest

from descent import numpy as dnp


class NotesSGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class NotesMomentum:
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class NotesAdaGrad:
    def __init__(self, lr=0.01):
        self.lr, self.h = lr, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class NotesRMSprop:
    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr, self.decay_rate, self.h = lr, decay_rate, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class NotesNesterov:  # cs231n's form
    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.mu, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            v_prev = self.v[key].copy()
            self.v[key] = self.mu * self.v[key] - self.lr * grads[key]
            params[key] += -self.mu * v_prev + (1 + self.mu) * self.v[key]


class NotesAdam:  # cs231n's, with bias correction
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t, self.m, self.v = lr, beta1, beta2, eps, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t += 1
        for key in params:
            self.m[key] = self.b1 * self.m[key] + (1 - self.b1) * grads[key]
            self.v[key] = self.b2 * self.v[key] + (1 - self.b2) * grads[key] ** 2
            mt = self.m[key] / (1 - self.b1**self.t)
            vt = self.v[key] / (1 - self.b2**self.t)
            params[key] += -self.lr * mt / (np.sqrt(vt) + self.eps)


PAIRS = [
    (dnp.SGD, NotesSGD, {"lr": 0.05}),
    (dnp.Momentum, NotesMomentum, {"lr": 0.05, "momentum": 0.8}),
    (dnp.Nesterov, NotesNesterov, {"lr": 0.05, "momentum": 0.8}),
    (dnp.AdaGrad, NotesAdaGrad, {"lr": 0.1}),
    (dnp.RMSprop, NotesRMSprop, {"lr": 0.01, "decay_rate": 0.9}),
    (dnp.Adam, NotesAdam, {"lr": 0.01}),
]


def _network(seed):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((4, 3)),
        "b1": rng.standard_normal(3),
        "W2": rng.standard_normal((3, 2)),
    }


@pytest.mark.parametrize("ours_cls,notes_cls,kw", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_update_matches_the_notes_class(ours_cls, notes_cls, kw):
    ours_params, notes_params = _network(0), _network(0)
    arrays = dict(ours_params)
    ours, notes = ours_cls(**kw), notes_cls(**kw)
    rng = np.random.default_rng(1)
    for _ in range(120):
        grads = {k: rng.standard_normal(v.shape) for k, v in notes_params.items()}
        ours.update(ours_params, grads)
        notes.update(notes_params, grads)
    for key in notes_params:
        assert ours_params[key] is arrays[key]  # updated in place, same arrays
        np.testing.assert_allclose(ours_params[key], notes_params[key], rtol=1e-10, atol=1e-12)


def test_missing_gradient_leaves_the_array_alone():
    params = _network(2)
    before = {k: v.copy() for k, v in params.items()}
    opt = dnp.Adam(lr=0.1)
    opt.update(params, {"W1": np.ones((4, 3)), "b1": np.ones(3)})
    assert np.array_equal(params["W2"], before["W2"])
    assert not np.array_equal(params["W1"], before["W1"])


def test_bad_inputs_are_named():
    params = _network(3)
    opt = dnp.SGD()
    with pytest.raises(KeyError, match="W9"):
        opt.update(params, {"W9": np.ones(2)})
    with pytest.raises(ValueError, match=r"grads\['b1'\] has shape \(2,\)"):
        opt.update(params, {"b1": np.ones(2)})
    with pytest.raises(TypeError, match=r"params\['x'\] must be a floating-point array"):
        dnp.SGD().update({"x": np.arange(3)}, {"x": np.ones(3)})


class NotesNadam:  # Adam with Nesterov momentum, no momentum schedule
    def __init__(self, lr=0.002, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t, self.m, self.v = lr, beta1, beta2, eps, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t += 1
        b1, t = self.b1, self.t
        for key in params:
            g = grads[key]
            self.m[key] = b1 * self.m[key] + (1 - b1) * g
            self.v[key] = self.b2 * self.v[key] + (1 - self.b2) * g**2
            m_hat = b1 * self.m[key] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
            params[key] -= self.lr * m_hat / (np.sqrt(self.v[key] / (1 - self.b2**t)) + self.eps)


def test_nadam_is_plain_unless_a_schedule_is_asked_for():
    import torch

    import descent

    rng = np.random.default_rng(4)
    grads = [{k: rng.standard_normal(v.shape) for k, v in _network(0).items()} for _ in range(100)]
    plain, notes, scheduled = _network(0), _network(0), _network(0)
    ours, ref, dozat = dnp.Nadam(lr=0.01), NotesNadam(lr=0.01), dnp.Nadam(lr=0.01, momentum_decay=4e-3)
    for g in grads:
        ours.update(plain, g)
        ref.update(notes, g)
        dozat.update(scheduled, g)
    ps = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in _network(0).items()}
    torch_form = descent.NAdam(list(ps.values()), lr=0.01)
    for g in grads:
        for k, p in ps.items():
            p.grad = torch.tensor(g[k])
        torch_form.step()
    for key in notes:
        np.testing.assert_allclose(plain[key], notes[key], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(scheduled[key], ps[key].detach().numpy(), rtol=1e-12, atol=1e-12)
        assert not np.allclose(plain[key], scheduled[key], rtol=1e-6, atol=0)  # the schedule matters
