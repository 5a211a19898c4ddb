"""The playground's numbers against independent references: torch.optim's own
classes in a plain loop, the notes' closed-form rates, a user's loop through
descent.landscapes, and the docs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from descent import catalog
from descent.landscapes import surfaces, trajectory, tuning
from descent.playground import api, formulas, symbols
from descent.playground.requests import BadRequest

ROOT = Path(__file__).resolve().parents[2]
STEPS = 60


@pytest.fixture(scope="module")
def app():
    return api.Playground()


def torch_path(entry, settings, surface, steps):
    """The reference: torch.optim's class, a user's loop, autograd on the surface."""
    kw = {**entry.fixed, **{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}}
    p = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    opt = entry.torch([p], **kw)
    xs, states = [p.detach().clone()], []
    for _ in range(steps):
        opt.zero_grad()
        surface.f(p).backward()
        opt.step()
        xs.append(p.detach().clone())
        states.append({k: v.clone() for k, v in opt.state[p].items() if k != "step"})
    return torch.stack(xs).numpy(), states


TWINS = [e.key for e in catalog.ENTRIES if e.torch is not None]


@pytest.mark.parametrize("key", TWINS)
def test_race_is_torch_optim(app, key):
    entry = catalog.get(key)
    settings = {"lr": 0.01 if entry.default_lr < 0.5 else 1.0}
    res = app.race({"surface": "beale", "steps": STEPS, "optimizers": [{"key": key, **settings}]})
    run = res["runs"][0]
    want, states = torch_path(entry, settings, surfaces.get("beale"), STEPS)
    np.testing.assert_allclose(np.array(run["xy"], dtype=float), want, rtol=1e-10, atol=1e-12)
    # the moments drawn are the optimizer's state, step by step
    for k, state in enumerate(states, start=1):
        for name, value in state.items():
            if value.numel() == 2:
                np.testing.assert_allclose(run["state"][name][k], value.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("key", [e.key for e in catalog.ENTRIES if e.torch is None])
def test_race_is_a_users_loop(app, key):
    entry = catalog.get(key)
    res = app.race({"surface": "himmelblau", "steps": STEPS, "optimizers": [{"key": key, "lr": 0.01}]})
    want = trajectory(surfaces.get("himmelblau"), entry, 0.01, {}, STEPS)
    np.testing.assert_allclose(np.array(res["runs"][0]["xy"], dtype=float), want.xy, rtol=1e-10, atol=1e-12)


def test_noise_and_racing_together_change_nothing(app):
    """Runs raced together with noise equal each one run alone by landscapes' loop
    (the same seeded noise, one gradient each)."""
    body = {"surface": "rosenbrock", "steps": 80, "noise": 0.5, "seed": 3}
    opts = [
        {"key": "sgd", "lr": 1e-3},
        {"key": "adam", "lr": 0.02},
        {"key": "momentum", "lr": 1e-3, "momentum": 0.5},
    ]
    res = api.Playground().race({**body, "optimizers": opts})
    noisy = surfaces.get("rosenbrock").noisy(0.5, seed=3)
    for run, o in zip(res["runs"], opts):
        hyper = {k: v for k, v in o.items() if k not in ("key", "lr")}
        want = trajectory(noisy, catalog.get(o["key"]), o["lr"], hyper, 80)
        np.testing.assert_allclose(np.array(run["xy"], dtype=float), want.xy, rtol=1e-10, atol=1e-12)


def test_theory_is_the_textbook(app):
    kappa = 50.0
    res = app.race({"surface": "quadratic", "kappa": kappa, "optimizers": [{"key": "sgd", "lr": 0.1}]})
    mu, L = 2 / kappa, 2.0  # x²/κ + y²: Hessian diag(2/κ, 2)
    sk = math.sqrt(kappa)
    s = math.sqrt(3 * kappa + 1)
    want = {
        "gd": (2 / (L + mu), 0.0, (kappa - 1) / (kappa + 1)),
        "heavy_ball": (
            4 / (math.sqrt(L) + math.sqrt(mu)) ** 2,
            ((sk - 1) / (sk + 1)) ** 2,
            (sk - 1) / (sk + 1),
        ),
        "nag": (4 / (3 * L + mu), (s - 2) / (s + 2), 1 - 2 / s),
    }
    th = res["theory"]
    assert th["curvatures"] == pytest.approx([mu, L])
    for m in th["methods"]:
        assert (m["lr"], m["momentum"], m["rate"]) == pytest.approx(want[m["method"]], rel=1e-12)
    # GD's rate at its own step: max |1 − α λ| over the two curvatures
    assert th["runs"][0] == {
        "method": "gd",
        "predicted": pytest.approx(max(abs(1 - 0.1 * mu), abs(1 - 0.1 * L))),
        "measured": pytest.approx(1 - 0.1 * mu, rel=1e-6),
    }


def test_heavy_ball_rate_at_any_setting(app):
    """β = 0.9, α = 0.1 on κ = 20: both curvatures give complex eigenvalues of modulus √β."""
    res = app.race(
        {
            "surface": "quadratic",
            "kappa": 20,
            "steps": 400,
            "optimizers": [{"key": "momentum", "lr": 0.1, "momentum": 0.9}],
        }
    )
    run = res["theory"]["runs"][0]
    assert run["method"] == "heavy_ball"
    assert run["predicted"] == pytest.approx(math.sqrt(0.9), rel=1e-12)
    assert run["measured"] == pytest.approx(math.sqrt(0.9), rel=0.01)


@pytest.mark.parametrize("angle", [0.0, 35.0])
def test_measured_rates_meet_the_theory(app, angle):
    kappa = 30.0
    methods = app.race({"surface": "quadratic", "kappa": kappa, "optimizers": [{"key": "sgd"}]})["theory"][
        "methods"
    ]
    keys = {"gd": "sgd", "heavy_ball": "momentum", "nag": "nag"}
    opts = [
        {"key": keys[m["method"]], "lr": m["lr"], **({"momentum": m["momentum"]} if m["momentum"] else {})}
        for m in methods
    ]
    res = app.race({"surface": "quadratic", "kappa": kappa, "angle": angle, "steps": 400, "optimizers": opts})
    for m, run in zip(methods, res["theory"]["runs"]):
        # a double eigenvalue at the optimum: eigvals finds it to about √(machine ε)
        assert run["predicted"] == pytest.approx(m["rate"], rel=1e-6)
        assert abs(run["measured"] - m["rate"]) <= 0.02 * (1 - m["rate"]), m["method"]


def test_the_turned_quadratic_has_the_same_curvatures():
    kappa, angle = 40.0, 25.0
    s = surfaces.quadratic(kappa, angle)
    H = torch.autograd.functional.hessian(lambda p: s.f(p), torch.zeros(2, dtype=torch.float64))
    vals, vecs = torch.linalg.eigh(H)
    assert vals.tolist() == pytest.approx([2 / kappa, 2.0])
    flat = vecs[:, 0] * torch.sign(vecs[0, 0])
    assert math.degrees(math.atan2(flat[1], flat[0])) == pytest.approx(angle)
    assert surfaces.quadratic(kappa, 0.0).f(torch.tensor([3.0, 1.0])) == pytest.approx(9 / kappa + 1)


def test_a_diverging_run_is_shown_as_diverged(app):
    res = app.race(
        {
            "surface": "rosenbrock",
            "steps": 100,
            "optimizers": [{"key": "sgd", "lr": 1.0}, {"key": "adam", "lr": 0.01}],
        }
    )
    bad, good = res["runs"]
    assert bad["diverged"] and bad["stopped_at"] is not None and bad["stopped_at"] < 20
    assert all(p is None for p in bad["xy"][bad["stopped_at"] :])
    assert not good["diverged"] and good["stopped_at"] is None
    json.dumps(res, allow_nan=False)  # strict JSON: nulls, no NaN


BAD = [
    ({"surface": "nowhere"}, "'nowhere'"),
    ({"optimizers": [{"key": "adamz"}]}, "'adamz'"),
    ({"optimizers": [{"key": "muon"}]}, "'muon'"),  # a whole model's optimizer: no point to step
    ({"optimizers": [{"key": "sgd", "lr": 0}]}, "lr = 0"),
    ({"optimizers": [{"key": "sgd", "lr": -1e-3}]}, "lr = -0.001"),
    ({"optimizers": [{"key": "sgd", "lr": float("nan")}]}, "lr = nan"),
    ({"optimizers": [{"key": "sgd", "lr": "fast"}]}, "lr = 'fast'"),
    ({"optimizers": [{"key": "adam", "betas": [0.9, 1.5]}]}, "betas[1] = 1.5"),
    ({"optimizers": [{"key": "adam", "eps": -1}]}, "eps = -1"),
    ({"optimizers": [{"key": "sgd", "momentum": 0.9}]}, "'momentum' is not a setting"),
    ({"steps": 0}, "steps = 0"),
    ({"steps": 10**6}, "steps = 1000000"),
    ({"start": [100, 0]}, "start = [100, 0]"),
    ({"surface": "quadratic", "kappa": 0.5}, "kappa = 0.5"),
    ({"kappa": 10}, "'quadratic'"),
    ({"optimizers": []}, "non-empty"),
]


@pytest.mark.parametrize(("change", "named"), BAD)
def test_bad_input_is_named(app, change, named):
    body = {"surface": "beale", "optimizers": [{"key": "sgd", "lr": 0.01}], **change}
    with pytest.raises(BadRequest) as err:
        app.race(body)
    assert named in str(err.value)


def test_tuned_is_the_landscapes_rule(app):
    got = app.tune({"surface": "booth", "steps": 60, "key": "momentum"})
    want = tuning.tune(surfaces.get("booth"), catalog.get("momentum"), 60)
    assert got["settings"] == {"lr": want.lr, **want.hyper}
    assert got["candidates"] == want.candidates


def test_a_cached_run_is_reused(app):
    body = {
        "surface": "booth",
        "steps": 40,
        "optimizers": [{"key": "sgd", "lr": 0.01}, {"key": "adam", "lr": 0.1}],
    }
    first = app.race(body)
    body["optimizers"][1]["lr"] = 0.2
    scene, specs = api.requests.scene(body), api.requests.runs(body)
    again = app.traces(scene, specs)
    assert again[0] is app._runs[(scene, specs[0])]
    assert first["runs"][1]["xy"] != api.trace_json(again[1])["xy"]


# -- the formulas and the table of state keys --------------------------------------------
@pytest.mark.parametrize("entry", catalog.ENTRIES, ids=lambda e: e.key)
def test_formulas_use_what_the_optimizer_has(entry):
    keys = api.state_keys(entry)
    shown = {k for k in keys if k in symbols.STATE and symbols.STATE[k].role in ("first", "second")}
    template = formulas.template(entry, keys)
    if template is None:
        assert entry.key not in catalog.NOTES, "the notes' optimizers each have a formula"
        return
    used = {
        p["key"] for line in template["lines"] for p in line if isinstance(p, dict) and p["src"] == "state"
    }
    assert shown <= used, f"{entry.key}: state {shown - used} is not in its formula"
    for line in template["lines"]:
        for p in line:
            if isinstance(p, dict) and p["src"] == "hyper":
                assert p["name"] in entry.defaults


def test_every_state_key_is_in_the_table():
    for entry in catalog.ENTRIES:
        for key in api.state_keys(entry):
            assert key == "step" or key in symbols.STATE, (entry.key, key)


def test_the_docs_hold_the_formulas():
    doc = (ROOT / "docs" / "conventions.md").read_text(encoding="utf-8")
    assert formulas.markdown() in doc
    calls = set(re.findall(r"^\|[^|]*\|[^|]*\| (`[^|]*) \|", doc, flags=re.M))
    calls |= set(re.findall(r"^\|[^|]*\| (`[^|]*) \|", doc, flags=re.M))
    for key, f in formulas.FORMULAS.items():
        if f.row:
            assert f.row in calls, f"{key}: no row with the descent call {f.row} in docs/conventions.md"
