"""Property-based parity: random configurations of every optimizer torch.optim also has,
run side by side with torch.optim (the independent reference) on identical params and
gradients. descent must match it (params, every state tensor, every param-group key) or
refuse with an error that names the bad value, as torch.optim does; never differ.

Drawn per example: the optimizer and its hyperparameters (a tensor ``lr`` too), 1–3
param groups with their own overrides, params that are 0-d, empty, transposed, sliced,
channels_last or views of one storage, the dtype (float64, float32, bfloat16), gradients
missing on random steps, a scheduler, a group added midway, ``flat`` and ``compile``,
and a checkpoint swapped through ``torch.save``/``torch.load`` in either direction
midway. Derandomized and bounded, so CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from optim_cases import compare_state, rel_err
from torch.optim import lr_scheduler as S

import descent

STEPS = 100

# Tolerances. float64: relative to the reference tensor's largest magnitude, 1e-10.
# Lower precisions: descent computes in float32 from its own elementary operations
# (ε folded into the bias correction, no fused lerp/addcmul), torch in the tensor's
# dtype with fused ops, so each step may differ by a few units in the last place of
# the stored dtype, on a scale of max(|p|, step) ≤ max(|p|, 1), and the differences
# add up over the steps: errors are taken relative to max(1, max |p|). Each side rounds
# p to its dtype every step (at most half an ulp, u = 2⁻²⁴ float32, 2⁻⁹ bfloat16), so
# after n steps the difference is a random walk of about √(2n)·u/√3: 1e-7 (float32)
# and 1.6e-2 (bfloat16) at n = 100. Bounds: 2e-5 for float32 (torch's fused ops add a
# few more roundings per step) and 0.1 for bfloat16 (6σ; torch also rounds every
# intermediate to bfloat16, where descent keeps float32).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 0.1}

LR = st.sampled_from([1e-3, 0.01, 0.05])
WD = st.sampled_from([0.0, 0.0, 0.01, 0.1])
EPS = st.sampled_from([1e-8, 1e-6, 1e-3])
BETA1 = st.sampled_from([0.0, 0.5, 0.9])
BETA2 = st.sampled_from([0.9, 0.99, 0.999])
FLAG = st.booleans()


def _betas(d):
    return (d(BETA1), d(BETA2))


#: name -> function(draw) -> (constructor kwargs, per-group override kwargs)
HYPER = {
    "SGD": lambda d: {
        "lr": d(LR),
        "momentum": d(st.sampled_from([0.0, 0.5, 0.9])),
        "dampening": d(st.sampled_from([0.0, 0.0, 0.3])),
        "weight_decay": d(WD),
        "nesterov": d(FLAG),
        "maximize": d(FLAG),
    },
    "Adagrad": lambda d: {
        "lr": d(LR),
        "lr_decay": d(st.sampled_from([0.0, 0.01])),
        "weight_decay": d(WD),
        "initial_accumulator_value": d(st.sampled_from([0.0, 0.1, 1.0])),
        "eps": d(st.sampled_from([1e-10, 1e-6])),
        "maximize": d(FLAG),
    },
    "RMSprop": lambda d: {
        "lr": d(LR),
        "alpha": d(st.sampled_from([0.9, 0.99])),
        "eps": d(EPS),
        "weight_decay": d(WD),
        "momentum": d(st.sampled_from([0.0, 0.5, 0.9])),
        "centered": d(FLAG),
        "maximize": d(FLAG),
    },
    "Adadelta": lambda d: {
        "lr": d(st.sampled_from([0.5, 1.0])),
        "rho": d(st.sampled_from([0.9, 0.95])),
        "eps": d(st.sampled_from([1e-6, 1e-4])),
        "weight_decay": d(WD),
        "maximize": d(FLAG),
    },
    "Adam": lambda d: {
        "lr": d(LR),
        "betas": _betas(d),
        "eps": d(EPS),
        "weight_decay": d(WD),
        "amsgrad": d(FLAG),
        "maximize": d(FLAG),
        "decoupled_weight_decay": d(FLAG),
    },
    "AdamW": lambda d: {
        "lr": d(LR),
        "betas": _betas(d),
        "eps": d(EPS),
        "weight_decay": d(st.sampled_from([0.0, 0.01, 0.1])),
        "amsgrad": d(FLAG),
        "maximize": d(FLAG),
    },
    "NAdam": lambda d: {
        "lr": d(LR),
        "betas": _betas(d),
        "eps": d(EPS),
        "weight_decay": d(WD),
        "momentum_decay": d(st.sampled_from([4e-3, 0.01, math.inf])),
        "decoupled_weight_decay": d(FLAG),
        "maximize": d(FLAG),
    },
    "Adamax": lambda d: {
        "lr": d(LR),
        "betas": _betas(d),
        "eps": d(EPS),
        "weight_decay": d(WD),
        "maximize": d(FLAG),
    },
    "RAdam": lambda d: {
        "lr": d(LR),
        "betas": _betas(d),
        "eps": d(EPS),
        "weight_decay": d(WD),
        "decoupled_weight_decay": d(FLAG),
        "maximize": d(FLAG),
    },
}

#: Keys a group may override (structure-changing ones included: torch.optim allows it).
OVERRIDABLE = {
    "SGD": ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"],
    "Adagrad": ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
    "RMSprop": ["lr", "alpha", "momentum", "centered", "weight_decay"],
    "Adadelta": ["lr", "rho", "weight_decay"],
    "Adam": ["lr", "betas", "amsgrad", "weight_decay", "decoupled_weight_decay"],
    "AdamW": ["lr", "betas", "amsgrad", "weight_decay"],
    "NAdam": ["lr", "betas", "momentum_decay", "weight_decay"],
    "Adamax": ["lr", "betas", "weight_decay"],
    "RAdam": ["lr", "betas", "decoupled_weight_decay", "weight_decay"],
}

LAYOUTS = ["matrix", "vector", "scalar", "empty", "transposed", "sliced", "channels_last", "shared"]

SCHEDULERS = [
    None,
    "OneCycleLR",
    "CyclicLR",
    "StepLR",
    "LambdaLR",
    "CosineAnnealingLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingWarmRestarts",
    "LinearLR",
]


def _momentum_cycles(name: str, kw: dict) -> bool:
    """Whether torch.optim can cycle this optimizer's momentum (OneCycleLR, CyclicLR):
    it needs a ``momentum`` or ``betas`` key, and RMSprop creates its momentum buffer
    only if momentum starts above zero."""
    if name in ("Adagrad", "Adadelta"):
        return False
    return not (name == "RMSprop" and kw["momentum"] == 0)


def _scheduler(kind: str | None, opt, cycle: bool):
    if kind is None:
        return None
    return {
        "StepLR": lambda: S.StepLR(opt, 7, gamma=0.5),
        "MultiStepLR": lambda: S.MultiStepLR(opt, [5, 15, 30], gamma=0.3),
        "ExponentialLR": lambda: S.ExponentialLR(opt, 0.95),
        "LambdaLR": lambda: S.LambdaLR(opt, lambda e: 1 / (1 + 0.1 * e)),
        "CosineAnnealingLR": lambda: S.CosineAnnealingLR(opt, 20),
        "CosineAnnealingWarmRestarts": lambda: S.CosineAnnealingWarmRestarts(opt, 6),
        "LinearLR": lambda: S.LinearLR(opt, 0.1, 1.0, 10),
        "OneCycleLR": lambda: S.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS + 1, cycle_momentum=cycle),
        "CyclicLR": lambda: S.CyclicLR(opt, 0.001, 0.05, step_size_up=4, cycle_momentum=cycle),
    }[kind]()


def _tensors(layout: str, dtype: torch.dtype, gen: torch.Generator) -> list[torch.Tensor]:
    def randn(*shape):
        return torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype)

    if layout == "matrix":
        return [randn(3, 4)]
    if layout == "vector":
        return [randn(17)]
    if layout == "scalar":
        return [randn()]
    if layout == "empty":
        return [randn(0, 3)]
    if layout == "transposed":
        return [randn(4, 3).t()]
    if layout == "sliced":
        return [randn(4, 6)[:, 1::2]]
    if layout == "channels_last":
        return [randn(2, 3, 2, 2).to(memory_format=torch.channels_last)]
    base = randn(2, 5)  # "shared": two params that are views of one storage
    return [base[0], base[1]]


def _params(layouts, dtype, seed):
    """The same params twice (each side's own storage, same layouts and values)."""
    pairs = []
    for i, layout in enumerate(layouts):
        ours = _tensors(layout, dtype, torch.Generator().manual_seed(seed + i))
        theirs = _tensors(layout, dtype, torch.Generator().manual_seed(seed + i))
        pairs += [(torch.nn.Parameter(a), torch.nn.Parameter(b)) for a, b in zip(ours, theirs)]
    return [a for a, _ in pairs], [b for _, b in pairs]


@st.composite
def configs(draw, name):
    kw = HYPER[name](draw)
    if name == "SGD" and kw["nesterov"]:  # torch.optim checks the constructor's arguments
        kw["momentum"], kw["dampening"] = max(kw["momentum"], 0.5), 0.0
    dtype = draw(st.sampled_from([torch.float64, torch.float64, torch.float32, torch.bfloat16]))
    layouts = draw(st.lists(st.sampled_from(LAYOUTS), min_size=1, max_size=5))
    n_groups = draw(st.integers(1, min(3, len(layouts))))
    overrides = []
    for _ in range(n_groups):
        keys = draw(st.lists(st.sampled_from(OVERRIDABLE[name]), max_size=2, unique=True))
        other = HYPER[name](draw)
        overrides.append({k: other[k] for k in keys})
    if dtype == torch.bfloat16:
        for o in overrides:
            o.pop("decoupled_weight_decay", None)
    if dtype == torch.bfloat16 and (name == "AdamW" or kw.get("decoupled_weight_decay")):
        # torch.optim multiplies a bfloat16 param by 1 − ηλ on its own, which rounds back
        # to p whenever ηλ < 2⁻⁹ (the decay is lost at every step); descent applies it
        # with the step in float32 and keeps it. They part by design, by up to n·ηλ, so
        # bfloat16 runs without decoupled decay (float64 and float32 cover it).
        kw["weight_decay"] = 0.0
        for o in overrides:
            o.pop("weight_decay", None)
    added = n_groups > 1 and draw(st.booleans())
    sched = draw(st.sampled_from(SCHEDULERS)) if not added else draw(st.sampled_from([None, "StepLR"]))
    tensor_lr = sched is None and draw(st.integers(0, 4)) == 0
    return {
        "name": name,
        "kw": kw,
        "dtype": dtype,
        "layouts": layouts,
        "overrides": overrides,
        "added_at": draw(st.integers(1, STEPS // 2)) if added else None,
        "sched": sched,
        "cycle": _momentum_cycles(name, kw) and draw(st.booleans()),
        "tensor_lr": tensor_lr,
        "none_rate": draw(st.sampled_from([0.0, 0.2])),
        "engine": {"flat": draw(st.booleans()), "compile": draw(st.sampled_from([False, "auto"]))},
        "swap": draw(st.sampled_from([None, "torch->descent", "descent->torch"])),
        "swap_at": draw(st.integers(STEPS // 4, 3 * STEPS // 4)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _split(params, n_groups):
    """Params into ``n_groups`` non-empty consecutive groups."""
    size = math.ceil(len(params) / n_groups)
    return [params[i : i + size] for i in range(0, len(params), size)]


def _groups(chunks, overrides):
    return [{"params": c, **o} for c, o in zip(chunks, overrides)]


def _run(cfg):
    name, kw, dtype = cfg["name"], dict(cfg["kw"]), cfg["dtype"]
    ours, theirs = _params(cfg["layouts"], dtype, cfg["seed"])
    chunks_ours, chunks_theirs = _split(ours, len(cfg["overrides"])), _split(theirs, len(cfg["overrides"]))
    overrides = cfg["overrides"][: len(chunks_ours)]
    n_initial = len(chunks_ours) - 1 if cfg["added_at"] is not None else len(chunks_ours)

    def lr_value():
        return torch.tensor(kw["lr"]) if cfg["tensor_lr"] else kw["lr"]

    def build(module, chunks, n, **engine):
        return getattr(module, name)(_groups(chunks[:n], overrides[:n]), **{**kw, "lr": lr_value()}, **engine)

    ref = build(torch.optim, chunks_theirs, n_initial)
    opt = build(descent, chunks_ours, n_initial, **cfg["engine"])
    s_ref, s_opt = (_scheduler(cfg["sched"], o, cfg["cycle"]) for o in (ref, opt))
    gen = torch.Generator().manual_seed(cfg["seed"] + 1)
    for step in range(STEPS):
        if step == cfg["added_at"]:
            ref.add_param_group(_groups(chunks_theirs[-1:], overrides[-1:])[0])
            opt.add_param_group(_groups(chunks_ours[-1:], overrides[-1:])[0])
        if step == cfg["swap_at"] and cfg["swap"]:
            # Each side continues from the other's checkpoint, saved and loaded as users do.
            n = len(ref.param_groups)
            if cfg["swap"] == "torch->descent":
                src, s_src = ref, s_ref
                opt = build(descent, chunks_ours, n, **cfg["engine"])
                s_opt = _scheduler(cfg["sched"], opt, cfg["cycle"])
                dst, s_dst = opt, s_opt
            else:
                src, s_src = opt, s_opt
                ref = build(torch.optim, chunks_theirs, n)
                s_ref = _scheduler(cfg["sched"], ref, cfg["cycle"])
                dst, s_dst = ref, s_ref
            buf = io.BytesIO()
            torch.save(src.state_dict(), buf)
            buf.seek(0)
            dst.load_state_dict(torch.load(buf))
            if s_dst is not None:
                s_dst.load_state_dict(copy.deepcopy(s_src.state_dict()))
        for a, b in zip(ours, theirs):
            if torch.rand((), generator=gen) < cfg["none_rate"]:
                a.grad = b.grad = None
                continue
            g = torch.randn(a.shape, dtype=torch.float64, generator=gen).to(dtype)
            a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        opt.step()
        for s in (s_ref, s_opt):
            if s is not None:
                s.step()
    return ours, theirs, opt, ref


def _scaled_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def _tolerance(cfg):
    tol = TOL[cfg["dtype"]]
    # torch.optim.load_state_dict casts NAdam's float32 mu_product to the param dtype,
    # so a torch NAdam resumed from any checkpoint (its own too) runs the product in
    # float64 from then on, while descent keeps torch's float32 product.
    if cfg["name"] == "NAdam" and cfg["swap"] == "descent->torch" and cfg["dtype"] == torch.float64:
        tol = 1e-8
    return tol


@pytest.mark.filterwarnings("ignore:descent. (Adagrad ignores|an SGD param group):RuntimeWarning")
@pytest.mark.parametrize("name", sorted(HYPER))
@settings(
    max_examples=48,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_configurations_match_torch(name, data):
    cfg = data.draw(configs(name), label="cfg")
    for label in ("dtype", "sched", "swap", "tensor_lr", "added_at"):
        value = cfg[label] if label != "added_at" else cfg[label] is not None
        event(f"{label}={value}")
    event(f"groups={len(cfg['overrides'])}")
    ours, theirs, opt, ref = _run(cfg)
    tol = _tolerance(cfg)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        err = rel_err(a, b) if cfg["dtype"] == torch.float64 else _scaled_err(a, b)
        assert err <= tol, (err, cfg)
    # torch.optim.load_state_dict casts NAdam's mu_product to the param dtype (above).
    cast = ("mu_product",) if cfg["swap"] == "descent->torch" else ()
    compare_state(opt, ref, tol, cast, err=None if cfg["dtype"] == torch.float64 else _scaled_err)


# -- invalid values: both refuse, and descent's message names the value ---------------
INVALID = [
    ("SGD", {"lr": -0.1}, "-0.1"),
    ("SGD", {"momentum": -0.5}, "-0.5"),
    ("SGD", {"momentum": 0.9, "nesterov": True, "dampening": 0.1}, "dampening=0.1"),
    ("Adam", {"betas": (1.0, 0.999)}, "1.0"),
    ("Adam", {"eps": -1e-8}, "-1e-08"),
    ("AdamW", {"weight_decay": -0.1}, "-0.1"),
    ("Adagrad", {"lr_decay": -1.0}, "-1.0"),
    ("Adagrad", {"initial_accumulator_value": -0.5}, "-0.5"),
    ("RMSprop", {"alpha": -0.9}, "-0.9"),
    ("Adadelta", {"rho": 1.5}, "1.5"),
    ("NAdam", {"momentum_decay": -0.1}, "-0.1"),
    ("RAdam", {"betas": (0.9, -0.1)}, "-0.1"),
    ("Adamax", {"lr": torch.tensor([0.1, 0.2])}, "1-element"),
]


@pytest.mark.parametrize("name,kw,named", INVALID, ids=[f"{n}-{sorted(k)[0]}" for n, k, _ in INVALID])
def test_invalid_values_raise_like_torch(name, kw, named):
    with pytest.raises(ValueError):
        getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], **kw)
    with pytest.raises(ValueError, match="Invalid|must be|requires") as err:
        getattr(descent, name)([torch.nn.Parameter(torch.zeros(2))], **kw)
    assert named in str(err.value)
