"""State formats (``state_dtype=``) and stochastic rounding, against independent references.

The 8-bit grid is rebuilt here from its definition (sign, exponent, mantissa), and the
nearest grid point found by brute force; the optimizers are compared with torch.optim's
float32 Adam; stochastic rounding with float32 arithmetic. None of it uses the product's
own encoder as the reference.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import descent
from descent.engine import formats

BLOCK = 256


def grid(signed: bool) -> torch.Tensor:
    """Every magnitude an 8-bit code holds, relative to its block's absmax (float64):
    3 mantissa bits, 4 exponent bits with a sign bit or 5 without, subnormals, the top
    code at the absmax."""
    ebits = 4 if signed else 5
    top = 2**ebits - 1
    values = []
    for e in range(2**ebits):
        for m in range(8):
            v = (m / 8) * 2.0 ** (1 - top) if e == 0 else (1 + m / 8) * 2.0 ** (e - top)
            values.append(v / 1.875)
    return torch.tensor(sorted(set(values)), dtype=torch.float64)


def reference_quantize(x: torch.Tensor) -> torch.Tensor:
    """Block-wise nearest grid point (brute force), float64."""
    out = torch.empty_like(x, dtype=torch.float64)
    for a in range(0, x.numel(), BLOCK):
        blk = x[a : a + BLOCK].double()
        amax = blk.abs().max()
        signed = bool((blk < 0).any())
        g = grid(signed) * amax
        if not signed:  # a positive value never rounds to zero there
            g = torch.where(g == 0, torch.where(blk > 0, g[1], 0.0)[:, None], g[None, :])
            idx = (blk.abs()[:, None] - g).abs().argmin(1)
            out[a : a + BLOCK] = g.gather(1, idx[:, None])[:, 0]
            continue
        idx = (blk.abs()[:, None] - g[None, :]).abs().argmin(1)
        out[a : a + BLOCK] = g[idx] * blk.sign()
    return out


@pytest.mark.parametrize("kind", ["signed", "unsigned"])
def test_8bit_round_trip_is_the_nearest_grid_point(kind):
    gen = torch.Generator().manual_seed(0)
    n = 10 * BLOCK + 37  # a partial last block too
    x = torch.randn(n, generator=gen) * torch.exp(torch.randn(n, generator=gen) * 3)
    if kind == "unsigned":
        x = x * x
    codes, scales = formats.encode(x)
    assert codes.dtype == torch.uint8 and codes.shape == (n,) and scales.shape == (math.ceil(n / BLOCK),)
    got = formats.decode(codes, scales).double()
    ref = reference_quantize(x)
    # nearest (ties and the last float32 rounding aside): no worse than the reference
    err, best = (got - x.double()).abs(), (ref - x.double()).abs()
    assert torch.all(err <= best + 1e-6 * torch.maximum(x.abs().double(), ref.abs()))
    # within the grid's range the relative error is at most half a step of 3 mantissa bits
    amax = torch.tensor([x[a : a + BLOCK].abs().max() for a in range(0, n, BLOCK)]).repeat_interleave(BLOCK)[
        :n
    ]
    lowest = 2.0 ** (-14 if kind == "signed" else -30) / 1.875
    inside = x.abs() >= lowest * amax
    assert torch.all((err / x.abs().double())[inside] <= 1 / 16 + 1e-6)
    assert (scales < 0).all() if kind == "signed" else (scales > 0).all()


def test_8bit_second_moment_range_covers_the_first_moments_square():
    """A gradient small enough to keep its first moment keeps its second moment."""
    g = torch.logspace(0, -6, BLOCK)
    m, v = formats.encode(g * (torch.arange(BLOCK) % 2 * 2 - 1.0)), formats.encode(g * g)
    m_back, v_back = formats.decode(*m), formats.decode(*v)
    assert not torch.any((m_back != 0) & (v_back == 0))


def _train(cls, fmt, steps=100, dtype=torch.float32, seed=0, **kw):
    gen = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(64, 128, generator=gen).to(dtype))
    target = torch.randn(64, 128, generator=gen)
    extra = {} if cls.__module__.startswith("torch") else {"state_dtype": fmt, "compile": False}
    opt = cls([w], lr=1e-2, **kw, **extra)
    for _ in range(steps):
        opt.zero_grad()
        ((w.float() - target) ** 2 * torch.linspace(0.01, 10, 128)).sum().backward()
        opt.step()
    return w.detach().float(), opt


@pytest.mark.parametrize("fmt,tol", [("bfloat16", 0.01), ("8bit", 0.1)])
def test_adam_with_compact_state_follows_float32_torch_adam(fmt, tol):
    """Over 100 steps the params move within ``tol`` (relative to how far they moved)
    of torch.optim.Adam's with float32 state."""
    start, _ = _train(torch.optim.Adam, None, steps=0)
    ref, _ = _train(torch.optim.Adam, None)
    ours, _ = _train(descent.Adam, fmt)
    assert (ours - ref).norm() / (ref - start).norm() < tol


def test_default_state_dtype_is_the_params():
    a, opt = _train(descent.Adam, None)
    ref, _ = _train(torch.optim.Adam, None)
    assert torch.allclose(a, ref, rtol=0, atol=1e-6)
    assert opt.state[opt.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.float32


def _digits_loss(fmt, steps=300):
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = descent.Adam(model.parameters(), lr=1e-3, state_dtype=fmt, compile=False)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item(), opt


@pytest.mark.parametrize("fmt", ["8bit", "bfloat16"])
def test_digits_mlp_with_compact_state_ends_near_float32(fmt):
    base, _ = _digits_loss(None)
    loss, opt = _digits_loss(fmt)
    assert abs(loss - base) <= 0.1 * base, (loss, base)
    w = opt.param_groups[0]["params"][0]  # 128×64: compact
    b = opt.param_groups[0]["params"][1]  # 128 elements: full precision
    key = "exp_avg.codes" if fmt == "8bit" else "exp_avg"
    want = torch.uint8 if fmt == "8bit" else torch.bfloat16
    assert opt.state[w][key].dtype == want and opt.state[b]["exp_avg"].dtype == torch.float32


def test_state_dict_is_compact_and_round_trips():
    _, opt = _train(descent.Adam, "8bit", steps=5)
    sd = opt.state_dict()
    entry = sd["state"][0]
    nbytes = sum(v.numel() * v.element_size() for k, v in entry.items() if k != "step")
    assert nbytes / (64 * 128) <= 2.1  # float32 state: 8 bytes a param
    # the codes under keys of their own: nothing that expects "exp_avg" takes them for numbers
    assert set(entry) == {"step", "exp_avg.codes", "exp_avg.absmax", "exp_avg_sq.codes", "exp_avg_sq.absmax"}
    # an 8-bit checkpoint loads into another 8-bit optimizer and both continue alike
    w2 = torch.nn.Parameter(opt.param_groups[0]["params"][0].detach().clone())
    twin = descent.Adam([w2], lr=1e-2, state_dtype="8bit", compile=False)
    twin.load_state_dict(copy.deepcopy(sd))  # (a live state_dict shares its step tensors)
    w1 = opt.param_groups[0]["params"][0]
    for _ in range(3):
        for w in (w1, w2):
            w.grad = torch.ones_like(w)
        opt.step()
        twin.step()
    assert torch.equal(w1, w2)


def test_checkpoints_move_between_formats():
    _, ref = _train(torch.optim.Adam, None, steps=20)
    w = ref.param_groups[0]["params"][0]
    # float32 torch.optim checkpoint → 8-bit descent (quantized on load)
    w8 = torch.nn.Parameter(w.detach().clone())
    ours = descent.Adam([w8], lr=1e-2, state_dtype="8bit", compile=False)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    back = formats.dequantize_state_dict(ours.state_dict())
    exp_avg = ref.state[w]["exp_avg"]
    assert back["state"][0]["exp_avg"].dtype == torch.float32
    assert torch.allclose(back["state"][0]["exp_avg"], exp_avg, rtol=1 / 16, atol=exp_avg.abs().max() * 1e-4)
    # 8-bit descent checkpoint → torch.optim.Adam through dequantize_state_dict
    wt = torch.nn.Parameter(w.detach().clone())
    torch_opt = torch.optim.Adam([wt], lr=1e-2)
    torch_opt.load_state_dict(copy.deepcopy(descent.dequantize_state_dict(ours.state_dict())))
    for o, p in ((ref, w), (ours, w8), (torch_opt, wt)):
        p.grad = torch.full_like(p, 0.5)
        o.step()
    moved = (w - wt).abs().max() / 1e-2
    assert moved < 0.1 and (w8 - wt).abs().max() < 0.02  # within the quantization error


def test_an_8bit_checkpoint_loads_into_full_precision_state():
    _, src = _train(descent.Adam, "8bit", steps=10)
    w = src.param_groups[0]["params"][0]
    w2 = torch.nn.Parameter(w.detach().clone())
    dst = descent.Adam([w2], lr=1e-2, compile=False)
    dst.load_state_dict(copy.deepcopy(src.state_dict()))
    w.grad = torch.ones_like(w)
    w2.grad = torch.ones_like(w2)
    src.step()
    dst.step()
    assert set(dst.state[w2]) == {"step", "exp_avg", "exp_avg_sq"}
    assert dst.state[w2]["exp_avg"].dtype == torch.float32
    assert (w - w2).abs().max() < 1e-3  # the two differ only by one step's rounding


def test_user_edits_of_compact_state():
    _, opt = _train(descent.Adam, "8bit", steps=3)
    w = opt.param_groups[0]["params"][0]
    opt.state[w]["exp_avg"] = torch.zeros(64, 128)  # a float tensor: quantized in
    opt.state[w]["exp_avg_sq"] = torch.ones(64, 128)
    before = w.detach().clone()
    w.grad = torch.zeros_like(w)
    opt.step()
    # m = 0.9·0 + 0 = 0: the param does not move
    assert torch.equal(w, before)
    assert set(opt.state[w]) == {
        "step",
        "exp_avg.codes",
        "exp_avg.absmax",
        "exp_avg_sq.codes",
        "exp_avg_sq.absmax",
    }
    assert opt.state[w]["exp_avg.codes"].dtype == torch.uint8
    assert torch.all(
        formats.decode(opt.state[w]["exp_avg_sq.codes"].reshape(-1), opt.state[w]["exp_avg_sq.absmax"]) > 0
    )
    with pytest.raises(descent.engine.StateEditError, match="block scales"):
        del opt.state[w]["exp_avg.absmax"]
        opt.state[w]["exp_avg.codes"] = torch.zeros(64, 128, dtype=torch.uint8)
        opt.step()


def test_8bit_state_is_never_read_as_numbers():
    """An 8-bit checkpoint handed to torch.optim as it is fails loudly (its codes are not
    under "exp_avg"); one saved by an earlier descent (codes under "exp_avg") still loads."""
    _, src = _train(descent.Adam, "8bit", steps=5)
    w = src.param_groups[0]["params"][0]
    wt = torch.nn.Parameter(w.detach().clone())
    torch_opt = torch.optim.Adam([wt], lr=1e-2)
    torch_opt.load_state_dict(copy.deepcopy(src.state_dict()))
    wt.grad = torch.ones_like(wt)
    with pytest.raises(KeyError, match="exp_avg"):
        torch_opt.step()
    old = copy.deepcopy(src.state_dict())
    for entry in old["state"].values():
        for name in ("exp_avg", "exp_avg_sq"):
            entry[name] = entry.pop(name + ".codes")
    w2 = torch.nn.Parameter(w.detach().clone())
    twin = descent.Adam([w2], lr=1e-2, state_dtype="8bit", compile=False)
    twin.load_state_dict(old)
    for p, o in ((w, src), (w2, twin)):
        p.grad = torch.ones_like(p)
        o.step()
    assert torch.equal(w, w2)
    assert "exp_avg" not in twin.state[w2] and twin.state[w2]["exp_avg.codes"].dtype == torch.uint8


@pytest.mark.parametrize(
    "kw,err,match",
    [
        ({"state_dtype": "float8"}, ValueError, "Invalid state_dtype: 'float8'"),
        ({"state_dtype": torch.float16}, ValueError, "torch.float16"),
        ({"state_dtype": "8bit", "flat": False}, ValueError, "needs flat=True"),
        ({"stochastic_rounding": "yes"}, TypeError, "stochastic_rounding setting: 'yes'"),
    ],
)
def test_bad_settings_are_refused(kw, err, match):
    with pytest.raises(err, match=match):
        descent.Adam([torch.nn.Parameter(torch.zeros(3))], **kw)


def test_every_optimizer_and_compose_take_state_dtype():
    from descent import rules

    Composed = descent.compose(
        "Composed",
        rules.EMA(),
        rules.EMAOfSquares(),
        defaults={"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8},
    )
    for cls in (descent.SGD, descent.Adagrad, descent.RMSprop, descent.Adadelta, descent.Lion, Composed):
        for fmt in formats.STATE_DTYPES:
            w = torch.nn.Parameter(torch.randn(80, 64))
            kw = {"momentum": 0.9} if cls is descent.SGD else {}
            opt = cls([w], lr=1e-2, state_dtype=fmt, compile=False, **kw)
            w.grad = torch.randn_like(w)
            opt.step()
            opt.step()
            assert torch.isfinite(w).all()
            assert all(
                v.dtype != torch.float32
                for k, v in opt.state[w].items()
                if k not in ("step",) and "." not in k
            )


# -- stochastic rounding ---------------------------------------------------------------
def _bf16_run(sr, steps=400, n=1 << 14):
    w = torch.nn.Parameter(torch.ones(n, dtype=torch.bfloat16))
    opt = descent.SGD([w], lr=1e-4, stochastic_rounding=sr, compile=False)
    for _ in range(steps):
        w.grad = torch.ones_like(w)
        opt.step()
    return w.detach()


def test_stochastic_rounding_keeps_tiny_updates_and_is_deterministic():
    exact = 1.0 - 400 * 1e-4  # float32 arithmetic: every step of 1e-4 is kept
    nearest = _bf16_run(False)
    assert torch.all(nearest == 1.0)  # 1e-4 is below half a bfloat16 ulp at 1.0: lost every time
    a, b = _bf16_run(True), _bf16_run(True)
    assert torch.equal(a, b)
    assert abs(a.float().mean().item() - exact) < 1e-3
    assert a.unique().numel() > 1  # rounded up or down element by element


def test_stochastic_rounding_bits_are_unbiased():
    x = torch.full((1 << 18,), 1 + 2**-10)  # an eighth of a bfloat16 ulp above 1
    bits = formats.hash32(torch.arange(x.numel(), dtype=torch.int32), torch.tensor(7, dtype=torch.int32))
    r = formats.round_bf16(x, bits).float()
    assert set(r.unique().tolist()) == {1.0, 1 + 2**-7}
    assert abs((r == 1 + 2**-7).float().mean().item() - 1 / 8) < 0.005


# -- the compiled kernel gives the eager bits ---------------------------------------------
CASES = [
    ("Adam", {"amsgrad": True, "weight_decay": 0.1}, "8bit", False),
    ("Adagrad", {"initial_accumulator_value": 0.2}, "8bit", False),
    ("Lion", {"weight_decay": 0.1}, "bfloat16", False),
    ("AdamW", {}, "bfloat16", True),
    ("AdamW", {}, None, True),
]


@pytest.mark.compiled
@pytest.mark.parametrize("name,kw,fmt,sr", CASES, ids=[f"{c[0]}-{c[2]}-sr{c[3]}" for c in CASES])
def test_kernel_gives_the_eager_bits(name, kw, fmt, sr):
    dtype = torch.bfloat16 if sr else torch.float32
    # staged chunks, a lone large gradient with a partial last block (300·301 = 352·256 + 188)
    # and one over 2¹⁷ elements, stepped in two kernel calls and its staged last block
    shapes = [(80, 64), (33,), (70, 70), (4100,), (300, 301), (600, 301)]
    runs = []
    for compile in (True, False):
        gen = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
        opt = getattr(descent, name)(
            ps, lr=1e-2, compile=compile, state_dtype=fmt, stochastic_rounding=sr, skip_nonfinite=False, **kw
        )
        gen = torch.Generator().manual_seed(1)
        for step in range(8):
            for i, p in enumerate(ps):
                p.grad = None if (step + i) % 5 == 4 else torch.randn(p.shape, generator=gen).to(dtype)
            opt.step()
        runs.append((ps, opt.state_dict()["state"]))
    (pa, sa), (pb, sb) = runs
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    for k in sa:
        for key, v in sa[k].items():
            assert torch.equal(v, sb[k][key]), (k, key)


def test_skip_nonfinite_keeps_compact_state():
    w = torch.nn.Parameter(torch.randn(300, 301))
    opt = descent.Adam([w], lr=1e-2, state_dtype="8bit", skip_nonfinite=True, compile=False)
    w.grad = torch.randn_like(w)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[w].items()}, w.detach().clone()
    w.grad[7, 7] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1 and torch.equal(w, before[1])
    assert all(torch.equal(v, before[0][k]) for k, v in opt.state[w].items())


def test_fresh_and_held_gradients_give_the_same_bits():
    """A lone gradient read where it lies (its last partial block staged) and the same
    gradient in descent's flat buffer step alike."""
    out = []
    for held in (False, True):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 300 * 301).reshape(300, 301))
        opt = descent.Adam([w], lr=1e-2, state_dtype="8bit", compile=False)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            g = torch.randn(w.shape, generator=gen)
            if held:
                opt.zero_grad(set_to_none=False)
                if w.grad is None:
                    w.grad = torch.zeros_like(w)
                w.grad.copy_(g)
            else:
                w.grad = g
            opt.step()
        out.append(w.detach().clone())
    assert torch.equal(*out)


def test_kernel_generation_changes_are_undone_after_a_build():
    """The code generator's two changes (loop step, vector bit casts) hold only while a
    format's kernel is generated: a user's own torch.compile afterwards sees inductor as
    it was."""
    from torch._inductor.codegen import cpp

    from descent.engine.formats import full_width

    before = (cpp.TilingSelect.select_tiling, vars(cpp.CppVecOverrides)["to_dtype_bitcast"])
    with full_width():
        assert cpp.TilingSelect.select_tiling is not before[0]
        assert vars(cpp.CppVecOverrides)["to_dtype_bitcast"] is not before[1]
    assert (cpp.TilingSelect.select_tiling, vars(cpp.CppVecOverrides)["to_dtype_bitcast"]) == before


def test_stochastic_rounding_bits_are_uniform_per_element_and_independent_across_steps():
    """What the rounding relies on: for each element, over steps (each step's key from
    the host mix), a value an eighth of an ulp above 1 rounds up 1/8 of the time, one
    step's decision says nothing of the next's, and the two 16-bit halves of one value
    (which round two buffers) are independent."""
    n, steps = 1024, 512
    pos = torch.arange(n, dtype=torch.int32)
    x = torch.full((n,), 1 + 2**-10)
    up_low, up_high = [], []
    for t in range(1, steps + 1):
        key = formats.subkey(torch.tensor(formats.step_key(3, t, 0), dtype=torch.int32), 1)
        bits = formats.hash32(pos, key)
        up_low.append(formats.round_bf16(x, bits).float() > 1)
        up_high.append(formats.round_bf16(x, bits >> 16).float() > 1)
    low, high = torch.stack(up_low).float(), torch.stack(up_high).float()  # (steps, n)
    for up in (low, high):
        per_element = up.mean(0)
        assert (per_element - 1 / 8).abs().max() < 0.09  # 6 binomial sds over 512 steps
        assert abs(up.mean().item() - 1 / 8) < 0.005
        again = (up[:-1] * up[1:]).mean().item()
        assert abs(again - (1 / 8) ** 2) < 0.002  # one step and the next: independent
        # neighbours in one step are stratified (the multiply spaces them like a dither):
        # never rounded up together more often than independent draws would be, so a
        # sum's rounding errors do not pile up
        assert (up[:, :-1] * up[:, 1:]).mean().item() <= (1 / 8) ** 2 + 0.002
    assert abs((low * high).mean().item() - (1 / 8) ** 2) < 0.002  # halves: independent


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_8bit_dcp_checkpoint_is_refused_by_float32_state(tmp_path):
    """dcp.load into a float32 optimizer's state (descent's or torch.optim's) reports the
    codes' key missing, instead of reading the codes as numbers."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    torch.manual_seed(0)
    m = torch.nn.Linear(128, 64)
    opt = descent.Adam(m.parameters(), lr=1e-2, state_dtype="8bit", compile=False)
    m(torch.randn(4, 128)).sum().backward()
    opt.step()
    dcp.save({"optim": get_optimizer_state_dict(m, opt)}, checkpoint_id=str(tmp_path))
    for cls in (descent.Adam, torch.optim.Adam):
        m2 = torch.nn.Linear(128, 64)
        other = cls(m2.parameters(), lr=1e-2)
        state = {"optim": get_optimizer_state_dict(m2, other)}
        with pytest.raises(BaseException) as err:
            dcp.load(state, checkpoint_id=str(tmp_path))
        assert "Missing key" in repr(getattr(err.value, "failures", err.value)), cls


def _saved_shards(x, world):
    """``x`` encoded as FSDP2 saves it on ``world`` ranks: each shard (``torch.chunk`` of
    dim 0) in blocks of its own, its scales one row, padded to the most blocks a shard
    has. Returns the codes (``x``'s shape), the rows of scales, and each shard's own
    decoding (the reference)."""
    shards = x.chunk(world)
    coded = [formats.encode(s.reshape(-1)) for s in shards]
    rows = torch.zeros(world, max(sc.numel() for _, sc in coded))
    for r, (_, sc) in enumerate(coded):
        rows[r, : sc.numel()] = sc
    codes = torch.cat([c.reshape(s.shape) for (c, _), s in zip(coded, shards)])
    want = torch.cat([formats.decode(c, sc).reshape(s.shape) for (c, sc), s in zip(coded, shards)])
    return codes, rows, want


def test_a_gathered_sharded_checkpoint_decodes_shard_by_shard():
    """FSDP2's gathered 8-bit state (``full_state_dict=True``, or ``dcp_to_torch_save`` of
    a sharded checkpoint) holds the whole param's codes and one row of block scales per
    shard, each shard (``torch.chunk`` of dim 0) starting a block: decoding it gives each
    shard's own values, it loads into torch.optim through ``dequantize_state_dict`` and
    into a one-process 8-bit optimizer directly (re-encoded in that one's blocks)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(70, 128, generator=gen)  # shards of 35 rows: 4,480 elements, a partial last block
    for world in (2, 3, 4):
        codes, rows, want = _saved_shards(x, world)
        got = formats.decode_like(codes, rows)
        assert torch.equal(got, want), world
        assert (got - x).abs().max() <= 0.04 * x.abs().max()  # and they are x's values (8-bit)
        # shards ending in a partial block, read as one flat run of blocks (how a gathered
        # checkpoint was decoded before): other values
        flat = formats.decode(codes.reshape(-1), rows.reshape(-1)[: formats.blocks(codes.numel())])
        assert world != 2 or not torch.equal(flat, want.reshape(-1))
    with pytest.raises(ValueError, match=r"do not fit block scales of shape \(2, 3\)"):
        formats.decode_like(codes, torch.ones(2, 3))

    # a gathered sharded checkpoint loads into torch.optim and into descent in one process
    p = torch.nn.Parameter(torch.zeros(70, 128))
    gathered = {"state": {0: {"step": torch.tensor(3.0), "exp_avg.codes": codes, "exp_avg.absmax": rows,
                              "exp_avg_sq": torch.ones(70, 128)}},
                "param_groups": [{**torch.optim.Adam([p]).param_groups[0], "params": [0]}]}  # fmt: skip
    plain = descent.dequantize_state_dict(gathered)
    assert torch.equal(plain["state"][0]["exp_avg"], want)
    ref = torch.optim.Adam([p])
    ref.load_state_dict(copy.deepcopy(plain))
    assert torch.equal(ref.state[p]["exp_avg"], want)
    q = torch.nn.Parameter(torch.zeros(70, 128))
    ours = descent.Adam([q], state_dtype="8bit")
    ours.load_state_dict(copy.deepcopy(gathered))
    q.grad = torch.zeros_like(q)
    ours.step()  # (the state is taken over at the step)
    back = descent.dequantize_state_dict(ours.state_dict())["state"][0]["exp_avg"]
    assert (back - 0.9 * want).abs().max() <= 0.04 * want.abs().max()


def test_rows_of_another_sharding_decode_in_the_blocks_they_were_saved_in():
    """A rank of a new sharding holds rows of the saved tensor that start and end anywhere
    in the saved shards' blocks: ``decode_rows`` gives exactly the values those shards'
    own decoding gives, for every row window (one process's 1-D scales included)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(70, 100, generator=gen)  # rows of 100: shards start mid-block
    for saved in (1, 2, 3, 4):
        codes, rows, want = _saved_shards(x, saved)
        scales = rows[0] if saved == 1 else rows
        for new in (1, 2, 3, 5, 8):  # every rank of another world size (torch.chunk's rows)
            first = 0
            for part in codes.chunk(new):
                got = formats.decode_rows(part, scales, 70, first)
                assert torch.equal(got, want[first : first + part.shape[0]]), (saved, new, first)
                first += part.shape[0]
        # a 1-D tensor (a row an element): shards start anywhere in a block
        vcodes, vrows, vwant = _saved_shards(x.reshape(-1)[:5000], saved)
        assert torch.equal(formats.decode_rows(vcodes[1234:4321], vrows, 5000, 1234), vwant[1234:4321])
    with pytest.raises(ValueError, match=r"do not fit block scales of shape \(2, 3\)"):
        formats.decode_rows(codes[:10], torch.ones(2, 3), 70, 0)
    with pytest.raises(ValueError, match=r"rows 65… of 70"):
        formats.decode_rows(codes[:10], rows, 70, 65)
