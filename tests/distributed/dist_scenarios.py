"""What the distributed tests run: a tiny float64 model trained on 2 gloo ranks under
DDP, FSDP2 (``fully_shard``) and ``ZeroRedundancyOptimizer`` with descent's optimizers,
and the single-process runs of torch.optim's classes on the global batch they are
compared against.

Every run starts from the same seeded weights and sees the same seeded global batches;
rank ``r`` trains on rows ``[r·B/2, (r+1)·B/2)``. Each loss is a mean, DDP and FSDP
average gradients over ranks, so a step on 2 ranks is the step of one process on the
global batch (up to the order of floating-point sums).
"""

from __future__ import annotations

import traceback

import torch
import torch.distributed as dist
from torch import nn

import descent

STEPS = 10
BATCH = 8  # global batch; each rank takes half
FEATURES, HIDDEN, OUT = 6, 8, 3

#: name → (descent class, kwargs); each compared against torch.optim's class of the same
#: name in one process, except Lion (torch has none), compared against descent's own Lion
#: run in one process.
OPTIMIZERS: dict[str, tuple[str, dict]] = {
    "SGD": ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    "Adam": ("Adam", {"lr": 0.01}),
    "Adam-amsgrad": ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    "AdamW": ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    "RMSprop": ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    "Adagrad": ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    "Adadelta": ("Adadelta", {"lr": 1.0}),
    "NAdam": ("NAdam", {"lr": 0.01}),
    "Adamax": ("Adamax", {"lr": 0.01}),
    "RAdam": ("RAdam", {"lr": 0.01}),
    "Lion": ("Lion", {"lr": 1e-3, "weight_decay": 0.1}),
}

#: DDP settings: (gradient_as_bucket_view, no_sync accumulation over 2 micro-batches,
#: how grads are cleared: "opt" = opt.zero_grad(), "opt-keep" = opt.zero_grad(set_to_none=
#: False), "model" = model.zero_grad())
DDP_MODES: dict[str, tuple[bool, bool, str]] = {
    "view0": (False, False, "opt"),
    "view1": (True, False, "opt"),
    "view1-keep": (True, False, "opt-keep"),
    "view0-nosync-keep": (False, True, "opt-keep"),
    "view1-nosync-model": (True, True, "model"),
}

FSDP_MODES = ("layers+root", "root")
FSDP_ONLY_ROOT = ("Adam", "SGD")  # "root" (one fully_shard on the whole model) runs these
ZERO_OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")
DCP_OPTIMIZERS = ("Adam", "RMSprop")
DCP_SAVE_AT = 5
#: ZeRO gives each rank whole params, largest first, to the rank holding least: with this
#: width rank 0 holds one param alone (its bucket is that param's size), rank 1 the rest.
ZERO_WIDTH = 64


def model(seed: int = 0, width: int = HIDDEN) -> nn.Module:
    """6 tensors of 3 … 64 elements by default; ``width=64`` makes one tensor (64×8)
    larger than all the others together."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, width),
        nn.Tanh(),
        nn.Linear(width, HIDDEN),
        nn.LayerNorm(HIDDEN),
        nn.Tanh(),
        nn.Linear(HIDDEN, OUT),  # 3 rows: uneven shards on 2 ranks
    ).double()


def batch(step: int, rank: int | None = None, world: int = 2, micro: int | None = None):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randn(BATCH, OUT, generator=g, dtype=torch.float64)
    if rank is not None:
        n = BATCH // world
        x, y = x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]
    if micro is not None:  # one of two micro-batches
        n = x.shape[0] // 2
        x, y = x[micro * n : (micro + 1) * n], y[micro * n : (micro + 1) * n]
    return x, y


def loss(m: nn.Module, x, y):
    return ((m(x) - y) ** 2).mean()


def optimizer(name: str, params, impl: str = "descent", **extra):
    cls, kw = OPTIMIZERS[name]
    if impl == "torch":
        return getattr(torch.optim, cls)(params, **kw, **extra)
    return getattr(descent, cls)(params, **kw, **extra)


def reference_impl(name: str) -> str:
    return "descent" if OPTIMIZERS[name][0] == "Lion" else "torch"


def reference(name: str, width: int = HIDDEN, steps: int = STEPS, skip: tuple = ()) -> list[torch.Tensor]:
    """One process, the global batch, torch.optim's class (descent's for Lion); the
    steps in ``skip`` are not taken."""
    m = model(width=width)
    opt = optimizer(name, m.parameters(), reference_impl(name))
    for step in range(steps):
        opt.zero_grad()
        loss(m, *batch(step)).backward()
        if step not in skip:
            opt.step()
    return [p.detach().clone() for p in m.parameters()]


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def full(p) -> torch.Tensor:
    p = p.detach()
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).clone()


# --- DDP ------------------------------------------------------------------------------


def ddp(rank: int, world: int, name: str, mode: str) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    bucket_view, accumulate, zero = DDP_MODES[mode]
    net = DDP(model(), gradient_as_bucket_view=bucket_view)
    params = list(net.parameters())
    opt = optimizer(name, params)
    # From the third step on (DDP rebuilds its buckets once, in the second), a grad that
    # DDP made a view of its bucket must still be one after opt.step().
    moved = 0
    for step in range(STEPS):
        if accumulate:
            with net.no_sync():
                loss(net, *batch(step, rank, world, micro=0)).div(2).backward()
            loss(net, *batch(step, rank, world, micro=1)).div(2).backward()
        else:
            loss(net, *batch(step, rank, world)).backward()
        before = [p.grad.untyped_storage().data_ptr() for p in params]
        opt.step()
        if step >= 2:
            moved += sum(p.grad.untyped_storage().data_ptr() != b for p, b in zip(params, before))
        if zero == "opt":
            opt.zero_grad()
        elif zero == "opt-keep":
            opt.zero_grad(set_to_none=False)
        else:
            net.zero_grad()
    return {"params": [full(p) for p in params], "grads_moved": moved}


#: the step inside backward under DDP: each bucket stepped after its all-reduce
IN_BACKWARD_OPTIMIZERS = ("SGD", "Adam", "RMSprop", "Adagrad")


def ddp_in_backward(rank: int, world: int, name: str, bucket_view: bool) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = DDP(model(), gradient_as_bucket_view=bucket_view, bucket_cap_mb=1e-4)  # several buckets
    opt = optimizer(name, net.parameters())
    descent.step_in_backward(net, opt)
    for step in range(STEPS):
        loss(net, *batch(step, rank, world)).backward()  # the step runs inside
    return {"params": [full(p) for p in net.parameters()]}


# --- FSDP2 ----------------------------------------------------------------------------


def shard(m: nn.Module, mode: str) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    if mode == "layers+root":
        for layer in m:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
    fully_shard(m)
    return m


def describe_state(opt) -> list[dict]:
    """Per param (in order), per state key: what kind of tensor holds it and how it is laid
    out (DTensor placements, local and global shape)."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            entry = {}
            for key, v in opt.state.get(p, {}).items():
                if not isinstance(v, torch.Tensor):
                    entry[key] = ("value", type(v).__name__)
                elif hasattr(v, "placements"):
                    entry[key] = (
                        "DTensor",
                        tuple(str(pl) for pl in v.placements),
                        tuple(local(v).shape),
                        tuple(v.shape),
                        v.dtype,
                    )
                else:
                    entry[key] = ("Tensor", tuple(v.shape), v.dtype)
            out.append(entry)
    return out


def fsdp_train(rank: int, world: int, m: nn.Module, opt, start: int, stop: int) -> None:
    for step in range(start, stop):
        opt.zero_grad()
        loss(m, *batch(step, rank, world)).backward()
        opt.step()


def fsdp(rank: int, world: int, name: str, mode: str, impl: str = "descent") -> dict:
    m = shard(model(), mode)
    opt = optimizer(name, m.parameters(), impl)
    fsdp_train(rank, world, m, opt, 0, STEPS)
    layout = [
        (type(p).__name__, tuple(str(pl) for pl in getattr(p, "placements", ())), tuple(local(p).shape))
        for p in m.parameters()
    ]
    return {"params": [full(p) for p in m.parameters()], "state": describe_state(opt), "param_layout": layout}


#: skip_nonfinite under FSDP2: at this step rank 1 alone finds a NaN in its shard
SKIP_AT = 3
SKIP_OPTIMIZERS = ("Adam", "SGD")


def fsdp_skip(rank: int, world: int, name: str) -> dict:
    """Both ranks must skip the step a NaN reaches on one rank's shard only."""
    m = shard(model(), "layers+root")
    opt = optimizer(name, m.parameters(), skip_nonfinite=True)
    for step in range(STEPS):
        opt.zero_grad()
        loss(m, *batch(step, rank, world)).backward()
        if step == SKIP_AT and rank == 1:
            shard_grad = next(local(p.grad) for p in m.parameters() if local(p.grad).numel())
            shard_grad.view(-1)[0] = float("nan")
        opt.step()
    return {"params": [full(p) for p in m.parameters()], "skipped": opt.skipped_steps}


# --- DCP ------------------------------------------------------------------------------


def dcp_state(m: nn.Module, opt) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(m), "optim": get_optimizer_state_dict(m, opt)}


def dcp_restore(m: nn.Module, opt, path: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = dcp_state(m, opt)
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(m, state["model"])
    set_optimizer_state_dict(m, opt, state["optim"])


def dcp_save_resume(rank: int, world: int, name: str, path: str) -> dict:
    """Train, save at DCP_SAVE_AT, train on (the uninterrupted run); then a new model and
    optimizer (other initial weights) load the checkpoint and train the same steps."""
    import torch.distributed.checkpoint as dcp

    m = shard(model(), "layers+root")
    opt = optimizer(name, m.parameters())
    fsdp_train(rank, world, m, opt, 0, DCP_SAVE_AT)
    dcp.save(dcp_state(m, opt), checkpoint_id=path)
    fsdp_train(rank, world, m, opt, DCP_SAVE_AT, STEPS)
    uninterrupted = [full(p) for p in m.parameters()]

    m2 = shard(model(seed=1), "layers+root")
    opt2 = optimizer(name, m2.parameters())
    dcp_restore(m2, opt2, path)
    fsdp_train(rank, world, m2, opt2, DCP_SAVE_AT, STEPS)
    return {"params": uninterrupted, "resumed": [full(p) for p in m2.parameters()]}


def dcp_resume_one_process(name: str, path: str) -> list[torch.Tensor]:
    """Load a checkpoint saved on 2 ranks into one process (no process group) and train
    on the global batch from DCP_SAVE_AT."""
    m = model(seed=1)
    opt = optimizer(name, m.parameters())
    dcp_restore(m, opt, path)
    for step in range(DCP_SAVE_AT, STEPS):
        opt.zero_grad()
        loss(m, *batch(step)).backward()
        opt.step()
    return [p.detach().clone() for p in m.parameters()]


# --- FSDP2 with state kept in a format ---------------------------------------------
#: (optimizer, state_dtype) runs of the compact-state scenarios
FORMAT_CASES = (("Adam", "8bit"), ("AdamW", "8bit"), ("Adam", "bfloat16"))
FORMAT_IN, FORMAT_OUT = 64, 3


def compact_model(seed: int = 0) -> nn.Module:
    """float32, two weights of ≥ 4,096 elements a shard (compact state): 128×64, whose
    shards on 2 ranks are 16 whole 8-bit blocks each, and 70×128, whose shards (35 rows,
    4,480 elements) end in a partial block; biases and the 3×70 head stay full precision."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FORMAT_IN, 128), nn.Tanh(), nn.Linear(128, 70), nn.Tanh(), nn.Linear(70, FORMAT_OUT)
    )


def compact_batch(step: int):
    """The whole batch, on every rank: FSDP2's average of two equal gradients is that
    gradient bit for bit, so a run on 2 ranks can be compared exactly with one process."""
    g = torch.Generator().manual_seed(2000 + step)
    return torch.randn(BATCH, FORMAT_IN, generator=g), torch.randn(BATCH, FORMAT_OUT, generator=g)


def compact_optimizer(name: str, params, state_dtype: str):
    cls, kw = OPTIMIZERS[name]
    return getattr(descent, cls)(params, **kw, state_dtype=state_dtype)


def compact_train(m: nn.Module, opt, start: int, stop: int) -> None:
    for step in range(start, stop):
        opt.zero_grad()
        loss(m, *compact_batch(step)).backward()
        opt.step()


def fsdp_compact(rank: int, world: int, name: str, state_dtype: str) -> dict:
    m = shard(compact_model(), "layers+root")
    opt = compact_optimizer(name, m.parameters(), state_dtype)
    compact_train(m, opt, 0, STEPS)
    layout = [(tuple(str(pl) for pl in p.placements), tuple(local(p).shape)) for p in m.parameters()]
    return {
        "params": [full(p) for p in m.parameters()],
        "state": describe_state(opt),
        "param_layout": layout,
        "state_dict": [
            {k: (local(v).clone() if isinstance(v, torch.Tensor) else v) for k, v in entry.items()}
            for entry in opt.state_dict()["state"].values()
        ],
    }


def compact_reference(name: str, state_dtype: str, world: int = 2) -> list[torch.Tensor]:
    """One process: the same steps with each param cut into the pieces FSDP2 gives each
    rank (``torch.chunk`` along dim 0), every piece a param of its own, so that descent's
    flat 8-bit buckets start a block where each shard does."""
    m = compact_model()
    pieces = [[c.detach().clone().requires_grad_() for c in p.detach().chunk(world)] for p in m.parameters()]
    opt = compact_optimizer(name, [c for cs in pieces for c in cs], state_dtype)
    for step in range(STEPS):
        m.zero_grad()
        loss(m, *compact_batch(step)).backward()
        for p, cs in zip(m.parameters(), pieces):
            for c, g in zip(cs, p.grad.chunk(world)):
                c.grad = g.clone()
        opt.step()
        with torch.no_grad():
            for p, cs in zip(m.parameters(), pieces):
                p.copy_(torch.cat([c.detach() for c in cs]))
    return [p.detach().clone() for p in m.parameters()]


def compact_float_reference(name: str) -> list[torch.Tensor]:
    """One process, the global batch, torch.optim's float32 state."""
    m = compact_model()
    cls, kw = OPTIMIZERS[name]
    opt = getattr(torch.optim, cls)(m.parameters(), **kw)
    compact_train(m, opt, 0, STEPS)
    return [p.detach().clone() for p in m.parameters()]


def dcp_compact(rank: int, world: int, name: str, state_dtype: str, path: str) -> dict:
    """:func:`dcp_save_resume` with state kept in a format."""
    import torch.distributed.checkpoint as dcp

    m = shard(compact_model(), "layers+root")
    opt = compact_optimizer(name, m.parameters(), state_dtype)
    compact_train(m, opt, 0, DCP_SAVE_AT)
    dcp.save(dcp_state(m, opt), checkpoint_id=path)
    compact_train(m, opt, DCP_SAVE_AT, STEPS)
    uninterrupted = [full(p) for p in m.parameters()]

    m2 = shard(compact_model(seed=1), "layers+root")
    opt2 = compact_optimizer(name, m2.parameters(), state_dtype)
    dcp_restore(m2, opt2, path)
    compact_train(m2, opt2, DCP_SAVE_AT, STEPS)
    return {"params": uninterrupted, "resumed": [full(p) for p in m2.parameters()]}


def compact_resume_one_process(name: str, path: str, impl: str) -> list[torch.Tensor]:
    """Load an 8-bit checkpoint saved by 2 ranks into one process (another block layout:
    a shard no longer starts a block), by the documented route: ``dcp_to_torch_save``
    gathers it (codes whole, one row of block scales per shard), then descent takes it as
    it is (``impl="descent"``: decoded shard by shard, encoded in its own blocks) or
    torch.optim through ``dequantize_state_dict``; train on from DCP_SAVE_AT."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    gathered = f"{path}.pt"
    dcp_to_torch_save(path, gathered)
    full = torch.load(gathered, weights_only=False)
    m = compact_model(seed=1)
    cls, kw = OPTIMIZERS[name]
    if impl == "descent":
        opt, optim = getattr(descent, cls)(m.parameters(), **kw, state_dtype="8bit"), full["optim"]
    else:
        opt = getattr(torch.optim, cls)(m.parameters(), **kw)
        optim = descent.dequantize_state_dict(full["optim"])
    set_model_state_dict(m, full["model"])
    set_optimizer_state_dict(m, opt, optim)
    compact_train(m, opt, DCP_SAVE_AT, STEPS)
    return [p.detach().clone() for p in m.parameters()]


def hsdp_compact(rank: int, world: int, path: str) -> dict:
    """8-bit state on a 2-D mesh (1 replica × 2 shards, HSDP's placements: Replicate,
    Shard(0)): the block scales' DTensor is replicated and sharded as the params are, and
    a DCP checkpoint resumes exactly."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("replicate", "shard"))

    def make(seed: int) -> nn.Module:
        m = compact_model(seed)
        for layer in m:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        return fully_shard(m, mesh=mesh)

    m = make(0)
    opt = compact_optimizer("Adam", m.parameters(), "8bit")
    compact_train(m, opt, 0, DCP_SAVE_AT)
    dcp.save(dcp_state(m, opt), checkpoint_id=path)
    compact_train(m, opt, DCP_SAVE_AT, STEPS)
    m2 = make(1)
    opt2 = compact_optimizer("Adam", m2.parameters(), "8bit")
    dcp_restore(m2, opt2, path)
    compact_train(m2, opt2, DCP_SAVE_AT, STEPS)
    return {
        "state": describe_state(opt),
        "params": [full(p) for p in m.parameters()],
        "resumed": [full(p) for p in m2.parameters()],
    }


def dcp_restore_resharded(m: nn.Module, opt, path: str) -> None:
    """:func:`dcp_restore` of a checkpoint saved on another sharding: descent's planner
    lets the 8-bit block scales through whole, for the optimizer to re-encode."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    state = dcp_state(m, opt)
    dcp.load(state, checkpoint_id=path, planner=descent.ReshardPlanner())
    set_model_state_dict(m, state["model"])
    set_optimizer_state_dict(m, opt, state["optim"])


def hsdp_model(seed: int, mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    m = compact_model(seed)
    for layer in m:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(m, mesh=mesh)


def dcp_reshard(rank: int, world: int, saved: str, path: str) -> dict:
    """8-bit Adam checkpoints across world sizes of the shards: the 2-rank checkpoint of
    ``dcp-compact/Adam/8bit`` (``saved``, step 5) loaded where every param is one shard
    (a (2, 1) mesh: 2 replicas of 1 shard), and one saved there loaded on 2 shards; each
    resumed run trains on to step 10. Without the planner DCP refuses the scales."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard"))
    refused = ""
    m0 = hsdp_model(1, mesh)
    try:
        dcp_restore(m0, compact_optimizer("Adam", m0.parameters(), "8bit"), saved)
    except CheckpointException as exc:  # DCP's own error, on another sharding without the planner
        refused = str(exc)
    m = hsdp_model(1, mesh)
    opt = compact_optimizer("Adam", m.parameters(), "8bit")
    dcp_restore_resharded(m, opt, saved)
    compact_train(m, opt, DCP_SAVE_AT, STEPS)
    scales = [tuple(v.shape) for k, v in opt.state_dict()["state"][0].items() if k.endswith(".absmax")]
    from_two = [full(p) for p in m.parameters()]

    one = hsdp_model(0, mesh)  # trained on one shard, saved, trained on (uninterrupted)
    opt1 = compact_optimizer("Adam", one.parameters(), "8bit")
    compact_train(one, opt1, 0, DCP_SAVE_AT)
    dcp.save(dcp_state(one, opt1), checkpoint_id=path)
    compact_train(one, opt1, DCP_SAVE_AT, STEPS)
    m2 = shard(compact_model(seed=1), "layers+root")
    opt2 = compact_optimizer("Adam", m2.parameters(), "8bit")
    dcp_restore_resharded(m2, opt2, path)
    compact_train(m2, opt2, DCP_SAVE_AT, STEPS)
    # across formats: torch.optim's float32 checkpoint into 8-bit state, 8-bit into float32
    torch_run = shard(compact_model(), "layers+root")
    topt = optimizer("Adam", torch_run.parameters(), "torch")
    compact_train(torch_run, topt, 0, DCP_SAVE_AT)
    dcp.save(dcp_state(torch_run, topt), checkpoint_id=f"{path}-torch")
    compact_train(torch_run, topt, DCP_SAVE_AT, STEPS)
    m3 = shard(compact_model(seed=1), "layers+root")
    opt3 = compact_optimizer("Adam", m3.parameters(), "8bit")
    dcp_restore_resharded(m3, opt3, f"{path}-torch")
    compact_train(m3, opt3, DCP_SAVE_AT, STEPS)
    m4 = shard(compact_model(seed=1), "layers+root")
    opt4 = optimizer("Adam", m4.parameters())
    dcp_restore_resharded(m4, opt4, saved)
    compact_train(m4, opt4, DCP_SAVE_AT, STEPS)
    # the gathered checkpoint (codes whole, a row of scales per saved shard) into sharded
    # optimizers of 1 and 2 shards
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    if rank == 0:
        dcp_to_torch_save(saved, f"{path}-gathered.pt")
    dist.barrier()
    gathered = {}
    for shape in ((world, 1), (1, world)):
        whole = torch.load(f"{path}-gathered.pt", weights_only=False)  # (loading distributes it in place)
        m5 = hsdp_model(1, init_device_mesh("cpu", shape, mesh_dim_names=("replicate", "shard")))
        opt5 = compact_optimizer("Adam", m5.parameters(), "8bit")
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(m5, whole["model"], options=options)
        set_optimizer_state_dict(m5, opt5, whole["optim"], options=options)
        compact_train(m5, opt5, DCP_SAVE_AT, STEPS)
        gathered[shape[1]] = [full(p) for p in m5.parameters()]
    return {
        "refused": refused,
        "gathered": gathered,
        "torch": [full(p) for p in torch_run.parameters()],
        "torch_into_8bit": [full(p) for p in m3.parameters()],
        "8bit_into_float": [full(p) for p in m4.parameters()],
        "float_keys": sorted(opt4.state_dict()["state"][0]),
        "scales": scales,
        "scales_two": [tuple(v.shape) for k, v in opt2.state_dict()["state"][0].items() if k.endswith("max")],
        "from_two": from_two,
        "one_shard": [full(p) for p in one.parameters()],
        "from_one": [full(p) for p in m2.parameters()],
    }


def compact_resume_dcp_one_process(name: str, path: str) -> list[torch.Tensor]:
    """The 2-rank 8-bit checkpoint loaded straight from DCP into one process (no process
    group) with descent's planner; train on from DCP_SAVE_AT."""
    m = compact_model(seed=1)
    opt = compact_optimizer(name, m.parameters(), "8bit")
    dcp_restore_resharded(m, opt, path)
    compact_train(m, opt, DCP_SAVE_AT, STEPS)
    return [p.detach().clone() for p in m.parameters()]


def fsdp_rounding(rank: int, world: int, sr: bool) -> dict:
    """bfloat16 params under FSDP2, SGD with steps below half a bfloat16 ulp: kept on
    average with ``stochastic_rounding=True``, lost every time without."""
    m = nn.Sequential(nn.Linear(FORMAT_IN, 128)).to(torch.bfloat16)
    with torch.no_grad():  # 0.1 everywhere: half an ulp there (2⁻¹²) is 2.4e-4
        for p in m.parameters():
            p.fill_(0.1)
    shard(m, "root")
    opt = descent.SGD(m.parameters(), lr=1e-4, stochastic_rounding=sr)
    start = [full(p) for p in m.parameters()]
    for _ in range(40):
        for p in m.parameters():  # a gradient of 1 everywhere: every step moves each weight by 1e-4
            p.grad = torch.ones_like(p)
        opt.step()
    return {"start": start, "params": [full(p) for p in m.parameters()]}


# --- ZeRO -----------------------------------------------------------------------------


def zero(rank: int, world: int, name: str, bucket_view: bool) -> dict:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = DDP(model(width=ZERO_WIDTH))
    cls, kw = OPTIMIZERS[name]
    opt = ZeroRedundancyOptimizer(
        net.parameters(),
        optimizer_class=getattr(descent, cls),
        parameters_as_bucket_view=bucket_view,
        **kw,
    )
    for step in range(STEPS):
        opt.zero_grad()
        loss(net, *batch(step, rank, world)).backward()
        opt.step()
    return {"params": [full(p) for p in net.parameters()]}


# --- everything, on each rank ---------------------------------------------------------


def cases(ckpt_dir: str) -> list[tuple[str, object, tuple]]:
    out = []
    for name in OPTIMIZERS:
        for mode in DDP_MODES:
            out.append((f"ddp/{name}/{mode}", ddp, (name, mode)))
    for name in IN_BACKWARD_OPTIMIZERS:
        for view in (False, True):
            out.append((f"ddp-in-backward/{name}/view{int(view)}", ddp_in_backward, (name, view)))
    for name in OPTIMIZERS:
        for mode in FSDP_MODES:
            if mode == "root" and name not in FSDP_ONLY_ROOT:
                continue
            out.append((f"fsdp/{name}/{mode}", fsdp, (name, mode)))
            if reference_impl(name) == "torch":
                out.append((f"fsdp-torch/{name}/{mode}", fsdp, (name, mode, "torch")))
    for name in SKIP_OPTIMIZERS:
        out.append((f"fsdp-skip/{name}", fsdp_skip, (name,)))
    for name in ZERO_OPTIMIZERS:
        for view in (False, True):
            out.append((f"zero/{name}/view{int(view)}", zero, (name, view)))
    for name in DCP_OPTIMIZERS:
        out.append((f"dcp/{name}", dcp_save_resume, (name, f"{ckpt_dir}/{name}")))
    for name, fmt in FORMAT_CASES:
        out.append((f"fsdp-compact/{name}/{fmt}", fsdp_compact, (name, fmt)))
        out.append((f"dcp-compact/{name}/{fmt}", dcp_compact, (name, fmt, f"{ckpt_dir}/{name}-{fmt}")))
    for sr in (False, True):
        out.append((f"fsdp-rounding/sr{int(sr)}", fsdp_rounding, (sr,)))
    out.append(("hsdp-compact", hsdp_compact, (f"{ckpt_dir}/hsdp-8bit",)))
    out.append(("dcp-reshard", dcp_reshard, (f"{ckpt_dir}/Adam-8bit", f"{ckpt_dir}/one-shard-8bit")))
    return out


def run_all(rank: int, world: int, ckpt_dir: str) -> dict:
    """Every case in sequence on this rank; a case that raises records its traceback (the
    others still run)."""
    torch.manual_seed(0)
    results = {}
    for key, fn, args in cases(ckpt_dir):
        try:
            results[key] = fn(rank, world, *args)
        except Exception:
            results[key] = {"error": traceback.format_exc()}
        dist.barrier()
    return results
