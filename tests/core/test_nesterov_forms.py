"""Nesterov's method in its two coordinates gives one trajectory.

Sutskever's look-ahead form keeps the true point w and takes the gradient at
w − η·μ·b; cs231n's/torch's form keeps the look-ahead point itself. So after every
step the torch-form parameter must equal w_t − η·μ·b_t of the look-ahead form, and
both see the same gradients.
"""

from __future__ import annotations

import torch

import descent

A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)


def loss(w):
    return 0.5 * w @ A @ w + torch.sin(w).sum()  # not quadratic: gradients differ per point


def test_lookahead_and_torch_forms_agree():
    lr, mu = 0.05, 0.9
    start = torch.tensor([2.0, -1.5], dtype=torch.float64)
    w = torch.nn.Parameter(start.clone())
    look = descent.LookaheadNesterov([w], lr=lr, momentum=mu)
    x = torch.nn.Parameter(start.clone())
    torch_form = torch.optim.SGD([x], lr=lr, momentum=mu, nesterov=True)

    def closure():
        look.zero_grad()
        out = loss(w)
        out.backward()
        return out

    for _ in range(100):
        look.step(closure)
        torch_form.zero_grad()
        loss(x).backward()
        torch_form.step()
        b = look.state[w]["momentum_buffer"]
        expected = w.detach() - lr * mu * b
        torch.testing.assert_close(x.detach(), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch_form.state[x]["momentum_buffer"], b, rtol=1e-12, atol=1e-12)
    # and it went somewhere: the trajectory is not trivially constant
    assert (w.detach() - start).norm() > 0.5


def test_lookahead_needs_a_closure():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = descent.LookaheadNesterov([w], lr=0.1)
    w.grad = torch.ones(2)
    try:
        opt.step()
    except RuntimeError as exc:
        assert "closure" in str(exc)
    else:
        raise AssertionError("step() without a closure must raise")
    assert torch.equal(w.detach(), torch.zeros(2))
