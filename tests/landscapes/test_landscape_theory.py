"""Theory: measured rates against the formulas, the formulas against eigenvalues, and
Reddi et al.'s counterexample against a hand-written projected Adam."""

import json
import math

import numpy as np
import pytest
import torch

import descent
from descent.cli.main import main
from descent.landscapes import theory

KAPPAS = (10, 100, 1000)


def _formula(method, kappa):
    """The issue's formulas, typed in again here."""
    if method == "gd":
        return (kappa - 1) / (kappa + 1)
    if method == "heavy_ball":
        return (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    return 1 - 2 / math.sqrt(3 * kappa + 1)


@pytest.fixture(scope="module")
def report():
    return theory.report(KAPPAS)


def test_report_shape(report):
    assert {(r["method"], r["kappa"]) for r in report["rates"]} == {
        (m, k) for m in ("gd", "heavy_ball", "nag") for k in KAPPAS
    }
    for r in report["rates"]:
        assert {"method", "kappa", "predicted", "measured"} <= set(r)
    assert {"adam_final_x", "amsgrad_final_x"} <= set(report["reddi"])
    json.dumps(report)


def test_measured_rates_within_2_percent_of_predicted(report):
    for r in report["rates"]:
        p = _formula(r["method"], r["kappa"])
        assert r["predicted"] == pytest.approx(p, rel=1e-12)
        assert r["measured"] == pytest.approx(p, rel=0.02)
        # Stricter, and what matters for speed: 1 − ρ within 2 % too.
        assert (1 - r["measured"]) == pytest.approx(1 - p, rel=0.02), r


@pytest.mark.parametrize("method", ["gd", "heavy_ball", "nag"])
@pytest.mark.parametrize("kappa", KAPPAS)
def test_predicted_rate_is_the_iteration_spectral_radius(method, kappa):
    """Independent reference: the 2×2 iteration matrices' eigenvalues over every
    curvature in [μ, L]."""
    t = theory.tuning(method, kappa)
    worst = 0.0
    for lam in np.concatenate([[1.0, kappa], np.linspace(1.0, kappa, 400)]):
        a, b = t.lr, t.momentum
        if method == "nag":
            c = 1 - a * lam
            coeffs = [1, -(1 + b) * c, b * c]  # z² − (1+β)(1−αλ) z + β(1−αλ)
        else:
            coeffs = [1, -(1 + b - a * lam), b]  # z² − (1+β−αλ) z + β
        worst = max(worst, float(np.abs(np.roots(coeffs)).max()))
    # A double root (heavy ball and Nesterov at the tuned point) is ill-conditioned for
    # root finding: ~√(machine ε) accuracy.
    assert worst == pytest.approx(_formula(method, kappa), abs=1e-6)
    assert theory.spectral_radius(method, kappa) == pytest.approx(worst, abs=1e-6)


def test_torch_nesterov_parameters_are_nesterovs_lookahead_sequence():
    kappa = 10.0
    t = theory.tuning("nag", kappa)
    lam = np.array([1.0, kappa])
    x_prev = x = y = np.array([1.0, 1.0])
    ys = []
    for _ in range(30):
        x_prev, x = x, y - t.lr * lam * y
        y = x + t.momentum * (x - x_prev)
        ys.append(y)
    p = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = descent.SGD([p], lr=t.lr, momentum=t.momentum, nesterov=True)
    for k in range(30):
        opt.zero_grad()
        (0.5 * (torch.tensor(lam) * p * p).sum()).backward()
        opt.step()
        assert np.allclose(p.detach().numpy(), ys[k], rtol=1e-12, atol=1e-15)


def _reddi_numpy(amsgrad, C=3.0, steps=60, lr=0.5, eps=1e-8):
    """Projected Adam / AMSGrad of Reddi et al. with torch's bias correction, by hand."""
    b2 = 1 / (1 + C * C)
    x, v, vmax = 0.0, 0.0, 0.0
    for t in range(1, steps + 1):
        g = C if t % 3 == 1 else -1.0
        v = b2 * v + (1 - b2) * g * g
        vmax = max(vmax, v)
        denom = math.sqrt((vmax if amsgrad else v) / (1 - b2**t)) + eps
        x = min(1.0, max(-1.0, x - lr / math.sqrt(t) * g / denom))
    return x


@pytest.mark.parametrize("amsgrad", [False, True])
def test_reddi_run_matches_hand_written_projected_adam(amsgrad):
    assert theory.reddi_run(amsgrad, steps=60) == pytest.approx(_reddi_numpy(amsgrad), abs=1e-12)


def test_reddi_adam_drifts_to_plus_one_amsgrad_finds_minus_one(report):
    d = report["reddi"]
    assert d["adam_final_x"] > 0.95
    assert d["amsgrad_final_x"] < -0.95


def test_reddi_needs_c_above_two():
    with pytest.raises(ValueError, match="2"):
        theory.reddi_run(False, C=2.0)


def test_theory_command_json(capsys):
    assert main(["theory", "--json", "--kappas", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in data["rates"]] == ["gd", "heavy_ball", "nag"]
    assert all(r["kappa"] == 10 for r in data["rates"])
    assert data["reddi"]["adam_final_x"] > 0.95 > -0.95 > data["reddi"]["amsgrad_final_x"]


def test_theory_command_table_and_bad_kappa(capsys):
    assert main(["theory", "--kappas", "x"]) == 2
    assert "'x'" in capsys.readouterr().err
