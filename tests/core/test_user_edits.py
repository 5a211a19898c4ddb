"""What a torch.optim user can reach stays theirs: every edit of ``optimizer.state`` and
``param_groups`` between steps takes effect at the next step as in torch.optim, and
``state_dict()`` shows it — or descent refuses it loudly.

The table: every optimizer with a torch.optim twin × every edit below × flat and
``flat=False``, run side by side with torch.optim (float64) for a few steps before and
after the edit; params and ``state_dict()`` must agree to 1e-12. Edits descent cannot
carry out as torch.optim would (state of another dtype, shape or device; a state tensor
that shares memory with another) are refused with an error naming them.
"""

from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path

import pytest
import torch

import descent
from descent.engine import StateEditError

sys.path.insert(0, str(Path(__file__).parent))
from optim_cases import compare_state, rel_err  # noqa: E402

OPTIMIZERS = [
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.1}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("Adadelta", {}),
    ("Adam", {"amsgrad": True}),
    ("AdamW", {}),
    ("NAdam", {}),
    ("Adamax", {}),
    ("RAdam", {}),
    ("Adafactor", {"weight_decay": 0.1}),  # a whole-tensor rule: state kept per tensor
]

SHAPES = [(4, 3), (3,), (5,), (2, 2)]
EDIT_AT = 3
STEPS = 7


def _tensor_keys(opt, p):
    return [k for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and k != "step"]


def _half(opt, p):
    return {k: opt.state[p][k].clone() * 0.5 for k in _tensor_keys(opt, p)}


# Each edit: (opt, params, spare, k) → None, called before step k (spare: new params of
# the same values on both sides, for list edits). Steps where it does nothing return.
def replace_state_tensors(opt, ps, spare, k):
    if k == EDIT_AT:
        for p in ps[:2]:
            for key, value in _half(opt, p).items():
                opt.state[p][key] = value


def replace_then_edit_in_place(opt, ps, spare, k):
    if k == EDIT_AT:
        for key, value in _half(opt, ps[0]).items():
            opt.state[ps[0]][key] = value
    if k == EDIT_AT + 2:  # the assigned tensor is still the state: editing it counts
        for key in _tensor_keys(opt, ps[0]):
            opt.state[ps[0]][key].mul_(0.25)


def replace_then_edit_the_entry_again(opt, ps, spare, k):
    if k == EDIT_AT:
        for key, value in _half(opt, ps[0]).items():
            opt.state[ps[0]][key] = value
    if k == EDIT_AT + 2:  # the entry edited again: the tensors assigned before stay its state
        st = opt.state[ps[0]]
        if "step" in st:
            st["step"] = torch.tensor(float(st["step"]))
        else:
            key = _tensor_keys(opt, ps[0])[-1]
            st[key] = st[key].clone()


def edit_state_in_place(opt, ps, spare, k):
    if k == EDIT_AT:
        for key in _tensor_keys(opt, ps[1]):
            opt.state[ps[1]][key].zero_() if key != "square_avg" else opt.state[ps[1]][key].mul_(2)


def reset_mapping(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.state = collections.defaultdict(dict)


def reset_mapping_then_edit(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.state = collections.defaultdict(dict)
    if k == EDIT_AT + 2:  # a plain mapping: its edits count too
        del opt.state[ps[0]]


def clear_state(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.state.clear()


def delete_entry(opt, ps, spare, k):
    if k == EDIT_AT:
        del opt.state[ps[0]]


def clear_entry(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.state[ps[1]].clear()


def assign_plain_entry(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.state[ps[2]] = dict(opt.state[ps[2]], **_half(opt, ps[2]))
    if k == EDIT_AT + 2:  # the user's dict is the entry: its edits count
        for key, value in _half(opt, ps[2]).items():
            opt.state[ps[2]][key] = value


def assign_step(opt, ps, spare, k):
    if k == EDIT_AT and "step" in opt.state[ps[0]]:
        opt.state[ps[0]]["step"] = torch.tensor(1.0)


def step_in_place(opt, ps, spare, k):
    if k == EDIT_AT and "step" in opt.state[ps[1]]:
        opt.state[ps[1]]["step"].add_(5.0)


def swap_param(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.param_groups[0]["params"][0] = spare[0]


def append_param(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.param_groups[0]["params"].append(spare[0])


def remove_param(opt, ps, spare, k):
    if k == EDIT_AT:
        del opt.param_groups[0]["params"][1]


def new_list_then_swap(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.param_groups[0]["params"] = list(opt.param_groups[0]["params"])
    if k == EDIT_AT + 2:  # a plain list: its edits count too
        opt.param_groups[0]["params"][1] = spare[1]


def switch_weight_decay(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.param_groups[0]["weight_decay"] = 0.1


def defaults_then_new_group(opt, ps, spare, k):
    if k == EDIT_AT:
        opt.defaults["lr"] = 0.02
        opt.add_param_group({"params": [spare[0]]})


def hook_midrun(opt, ps, spare, k):
    if k == EDIT_AT:

        def halve(o, args, kwargs):
            for group in o.param_groups:
                group["lr"] = group["lr"] * 0.5

        opt.register_step_pre_hook(halve)


def add_group_after_surgery(opt, ps, spare, k):
    if k == EDIT_AT:  # a layer replaced: its params leave, new ones join in a group of their own
        opt.param_groups[0]["params"].remove(ps[0])
        opt.add_param_group({"params": spare, "lr": 0.01})


def append_group_directly(opt, ps, spare, k):
    if k == EDIT_AT:  # bypassing add_param_group, as some code does
        opt.param_groups.append({**opt.param_groups[0], "params": list(spare), "lr": 0.01})


def delete_group(opt, ps, spare, k):
    if k == 1:
        opt.add_param_group({"params": spare})
    if k == EDIT_AT:
        del opt.param_groups[0]


EDITS = [
    replace_state_tensors,
    replace_then_edit_in_place,
    replace_then_edit_the_entry_again,
    edit_state_in_place,
    reset_mapping,
    reset_mapping_then_edit,
    clear_state,
    delete_entry,
    clear_entry,
    assign_plain_entry,
    assign_step,
    step_in_place,
    swap_param,
    append_param,
    remove_param,
    new_list_then_swap,
    switch_weight_decay,
    defaults_then_new_group,
    hook_midrun,
    add_group_after_surgery,
    append_group_directly,
    delete_group,
]


def _pair(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    return [torch.nn.Parameter(x.clone()) for x in init], [torch.nn.Parameter(x.clone()) for x in init]


def _params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def _feed(opt, ref, gen):
    for a, b in zip(_params(opt), _params(ref)):
        g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()


def _state_dicts_agree(opt, ref):
    try:
        ref.state_dict()
    except KeyError:  # torch.optim cannot pack state of a param no group holds
        with pytest.raises(KeyError):
            opt.state_dict()
        return
    compare_state(opt, ref, 1e-12)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("case", OPTIMIZERS, ids=lambda c: c[0])
def test_edit_takes_effect_as_in_torch(case, edit, flat):
    name, kw = case
    ours, theirs = _pair(SHAPES, 0)
    spare_ours, spare_theirs = _pair([(4, 3), (3,)], 1)
    opt = getattr(descent, name)(ours, flat=flat, **kw)
    ref = getattr(torch.optim, name)(theirs, **kw)
    gen = torch.Generator().manual_seed(2)
    for k in range(STEPS):
        edit(opt, ours, spare_ours, k)
        edit(ref, theirs, spare_theirs, k)
        _feed(opt, ref, gen)
        opt.step()
        ref.step()
    for a, b in zip(ours + spare_ours, theirs + spare_theirs):
        assert rel_err(a, b) <= 1e-12
    _state_dicts_agree(opt, ref)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tensor"])
@pytest.mark.parametrize(
    "change",
    [
        ("dtype", lambda t: t.to(torch.float32)),
        ("shape", lambda t: t.reshape(-1)[:-1].clone() if t.numel() > 1 else t.repeat(2)),
        ("device", lambda t: t.to("meta")),
    ],
    ids=lambda c: c[0],
)
def test_state_of_another_dtype_shape_or_device_is_refused_naming_it(change, flat):
    what, fn = change
    ours, _ = _pair(SHAPES, 0)
    opt = descent.Adam(ours, flat=flat)
    for _ in range(2):
        for p in ours:
            p.grad = torch.ones_like(p)
        opt.step()
    before = [p.detach().clone() for p in ours]
    opt.state[ours[0]]["exp_avg"] = fn(opt.state[ours[0]]["exp_avg"])
    with pytest.raises(StateEditError, match=rf"'exp_avg'.*{what}"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, before))  # nothing written


def test_state_tensor_sharing_memory_with_another_is_refused():
    ours, _ = _pair(SHAPES, 0)
    opt = descent.Adam(ours)
    for p in ours:
        p.grad = torch.ones_like(p)
    opt.step()
    big = torch.zeros(100, dtype=torch.float64)
    opt.state[ours[1]]["exp_avg"] = big[:3]  # a window of another tensor: torch would write into big
    with pytest.raises(StateEditError, match="shares its memory"):
        opt.step()


@pytest.mark.parametrize("case", OPTIMIZERS, ids=lambda c: c[0])
def test_duplicate_param_in_a_group_warns_and_steps_as_torch(case):
    """torch.optim warns (deprecated) and updates the param once per appearance, in order."""
    name, kw = case
    ours, theirs = _pair(SHAPES, 0)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = getattr(descent, name)([ours[0], ours[1], ours[0], ours[2]], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(torch.optim, name)([theirs[0], theirs[1], theirs[0], theirs[2]], **kw)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        for a, b in zip(ours[:3], theirs[:3]):
            g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert rel_err(a, b) <= 1e-12
    compare_state(opt, ref, 1e-12)


def test_tracked_state_is_invisible_to_checkpoints_and_copies():
    import copy
    import io

    ours, theirs = _pair(SHAPES, 0)
    opt, ref = descent.Adam(ours), torch.optim.Adam(theirs)
    for p, q in zip(ours, theirs):
        p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    opt.step()
    ref.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)  # plain dicts and tensors only
    assert all(type(v) is dict for v in loaded["state"].values())
    twin = copy.deepcopy(opt)  # an engine of its own, the same numbers as torch.optim's copy
    twin_ref = copy.deepcopy(ref)
    for p, q in zip(_params(twin), _params(twin_ref)):
        p.grad, q.grad = torch.full_like(p, 0.5), torch.full_like(q, 0.5)
    twin.step()
    twin_ref.step()
    for a, b in zip(_params(twin), _params(twin_ref)):
        assert rel_err(a, b) <= 1e-12
    for a, b in zip(ours, theirs):  # the original is untouched by its copy's step
        assert rel_err(a, b) <= 1e-12
