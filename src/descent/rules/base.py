"""The skeleton every optimizer shares, as the notes write it.

    g_t = ∇f(w_t)
    m_t = φ(g_1 … g_t)          first moment  (none, heavy ball, EMA, Nesterov)
    v_t = ψ(g_1 … g_t)          second moment (none, Σg², EMA of g², AdaDelta, max)
    w_{t+1} = w_t − η · m_t / √v_t

An update is a :class:`Chain`: ``Prepare`` (maximize, L2 weight decay), then the moment
transforms in order, then ``Descend`` (decoupled weight decay and the step). Each
transform owns its state buffers (named as torch.optim names them), computes its
per-step numbers on the host (bias corrections …) and applies plain elementwise tensor
code. The engine runs that code eagerly or compiles it into one kernel over flat
buffers; it never knows an optimizer by name.

Rules for writing ``apply``: update your own state in place, never modify ``u``, ``g``
or another transform's state, touch ``p`` only in the step (``Descend``, or a subclass
that a rule puts last in its chain when its parameter update is not ``w ← w − η·u``, as
Schedule-Free's), and write the math with
elementary operations (``+ − * /``, :func:`sqrt`, ``torch.maximum``, ``abs``,
``sign``; in place ``mul_``, ``add_``, ``sub_`` without ``alpha``). Every number in
``h`` arrives as a 0-d tensor, eagerly and compiled alike, so both paths round the same
way bit for bit (``tests/engine`` checks it for every optimizer). A ``bool`` in ``h``
is static: the kernel is specialized on it, so Python ``if`` on it is fine.

A *whole-tensor* transform (:attr:`Transform.whole`: Muon's Newton–Schulz, Adafactor's
factored second moment) needs a tensor's shape. A chain that holds one runs eagerly on
batches of same-shape tensors (a leading batch dimension on ``u``, ``g``, ``p`` and every
state buffer; see ``descent.engine.matrix``), elementwise transforms before and after it
included, so such a transform may use any torch op (matmuls, reductions over its own
tensor's dimensions, never over the batch).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .hyper import (  # noqa: F401 (re-exported: the rules read hyperparameters through base)
    Fixed,
    Host,
    Hyper,
    Scalars,
    TensorArithmetic,
    folded,
    keep_graph,
    read,
    tensor_arithmetic,
)


class Transform:
    """One stage of an update.

    Subclasses set :attr:`state` (per-element buffers) and :attr:`host` (per-tensor
    scalars kept on the CPU, such as NAdam's ``mu_product``) and implement
    :meth:`apply`; :meth:`scalars` and :meth:`advance` as needed.
    """

    state: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    #: Host scalars kept in float64 (a running sum in Python floats, as a reference
    #: implementation keeps it); the others in torch.optim's ``step`` dtype.
    wide: tuple[str, ...] = ()
    #: A coordinate whose gradient is 0 keeps its state and param: a sparse gradient's
    #: step may then run on the rows it names alone.
    sparse: bool = False
    #: ``apply(c·u) = c·apply(u)`` for a scalar ``c > 0``, and the state never sees ``u``:
    #: a scalar factor pending from an earlier transform may then wait until the step.
    linear: bool = False
    #: Sees each tensor whole, with its shape (dimension 0 of every tensor ``apply`` gets
    #: is a batch of same-shape params): see the module's docstring.
    whole: bool = False

    def buffers(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """The state buffers of a param of ``shape`` and their shapes (torch.optim's):
        every name in :attr:`state`, param-shaped, unless a whole-tensor transform keeps
        other shapes (Adafactor's row and column factors)."""
        return {name: tuple(shape) for name in self.state}

    def fill(self, name: str, group: Mapping[str, Any]) -> float:
        """Initial value of state buffer ``name``."""
        return 0.0

    def host_init(self, name: str) -> float:
        """Initial value of host scalar ``name``."""
        return 0.0

    def advance(self, group: Mapping[str, Any], t: float, host: Host) -> None:
        """Assign the values of this transform's host scalars at step ``t`` in ``host``
        (it holds those of step ``t − 1``). Each is then rounded to its dtype as
        torch.optim's in-place op on a 0-d tensor rounds it; :meth:`Host.num` rounds an
        operand as that op would, so ``host[k] = host[k] * host.num(k, x)`` is
        ``state[k].mul_(x)``."""

    def pace(self, group: Mapping[str, Any], t: float) -> float:
        """This transform's factor on the step size of step ``t``: η_t = η·Π pace. The
        step then scales everything it does with η (decoupled decay included): ADOPT's
        first step, which only initializes its second moment, has pace 0."""
        return 1.0

    def scalars(self, group: Mapping[str, Any], t: float, host: Mapping[str, float]) -> Scalars:
        """Numbers ``apply`` needs at step ``t``, computed once per step on the host."""
        return {}

    def apply(
        self, u: Tensor, g: Tensor, p: Tensor, s: dict[str, Tensor], h: Scalars
    ) -> Tensor | tuple[Tensor, Any]:
        """Elementwise math: take the direction ``u`` and return the new one.

        Returning ``(v, c)`` with a scalar ``c`` means ``v·c``: the chain multiplies by
        ``c`` as late as it may (into the learning rate when every later transform is
        :attr:`linear`), which saves a full-size multiplication per step.
        """
        raise NotImplementedError

    def key(self) -> Hashable:
        """Structural identity: two transforms with equal keys compile to the same code."""
        return (type(self).__qualname__, tuple(sorted(vars(self).items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Prepare(Transform):
    """g ← −g (maximize);  g ← g + λ·w (L2 weight decay, coupled to the gradient)."""

    def __init__(self, maximize: bool = False, l2: bool = False, weight_decay: Hyper = "weight_decay"):
        self.maximize = maximize
        self.l2 = l2
        self.weight_decay = weight_decay

    @property
    def sparse(self) -> bool:  # type: ignore[override]
        return not self.l2

    def scalars(self, group, t, host):
        return {"wd": read(group, self.weight_decay)} if self.l2 else {}

    def apply(self, u, g, p, s, h):
        if self.maximize:
            g = -g
        if self.l2:
            g = axpy(g, h["wd"], kept(p, h["wd"]))
        return g


class Descend(Transform):
    """w ← w·(1 − η·λ) (decoupled weight decay, Loshchilov & Hutter);  w ← w − η·u.

    A rule whose parameter update differs (Schedule-Free's interpolation) subclasses this
    and puts its step last in its transforms; :class:`Chain` then uses it instead. A step
    that is not :attr:`linear` in ``u`` gets ``u`` with any pending factor applied.
    """

    linear = True

    def __init__(self, decoupled: bool = False, lr: Hyper = "lr", weight_decay: Hyper = "weight_decay"):
        self.decoupled = decoupled
        self.lr = lr
        self.weight_decay = weight_decay

    @property
    def sparse(self) -> bool:  # type: ignore[override]
        return not self.decoupled

    def scalars(self, group, t, host, pace: float = 1.0):
        lr = read(group, self.lr) * pace
        if self.decoupled:
            wd = read(group, self.weight_decay)
            arith = tensor_arithmetic(group, self.lr)
            if arith is not None:  # torch.optim's 1 − lr·λ on a tensor lr
                return {"lr": lr, "shrink": arith.op(1 - arith.op(lr * arith.num(wd)))}
            return {"lr": lr, "shrink": 1 - lr * wd}
        return {"lr": lr}

    def apply(self, u, g, p, s, h):
        if self.decoupled:
            p.mul_(h["shrink"])
        sub_(p, h["lr"], u)
        return u


class Chain:
    """Prepare → moments → Descend, with everything the engine needs to run it."""

    def __init__(
        self,
        moments: Sequence[Transform],
        *,
        maximize: bool = False,
        l2: bool = False,
        decoupled: bool = False,
    ):
        moments = list(moments)
        if moments and isinstance(moments[-1], Descend):
            step = moments.pop()
            if step.decoupled != decoupled:
                raise ValueError(f"{step!r} decays weight as it says, not as decoupled={decoupled}")
        else:
            step = Descend(decoupled=decoupled)
        if any(isinstance(tr, Descend) for tr in moments):
            raise ValueError("a chain has one step, and it comes last")
        self.transforms: tuple[Transform, ...] = (Prepare(maximize=maximize, l2=l2), *moments, step)
        #: the step, last of :attr:`transforms`, and the transforms before it
        self.descend: Descend = step
        self.before: tuple[Transform, ...] = self.transforms[:-1]
        #: the transforms with a say in the step size (:meth:`Transform.pace`)
        self.paced = tuple(tr for tr in moments if type(tr).pace is not Transform.pace)
        names = [n for tr in self.transforms for n in tr.state]
        if len(set(names)) != len(names):
            raise ValueError(f"two transforms of one chain claim the same state buffer: {names}")
        hosts = [n for tr in self.transforms for n in tr.host]
        if "step" in hosts or len(set(hosts)) != len(hosts):
            raise ValueError(f"host scalars must be unique and not 'step': {hosts}")
        self.state: tuple[str, ...] = tuple(names)
        self.host: tuple[str, ...] = ("step", *hosts)
        #: the transforms that advance host scalars
        self.advancing = tuple(tr for tr in self.transforms if type(tr).advance is not Transform.advance)
        #: some transform sees whole tensors: the chain runs on batches of same-shape params
        self.whole: bool = any(tr.whole for tr in self.transforms)
        self.key: Hashable = tuple(tr.key() for tr in self.transforms)

    def owner(self, name: str) -> Transform:
        return next(tr for tr in self.transforms if name in tr.state or name in tr.host)

    def fill(self, name: str, group: Mapping[str, Any]) -> float:
        return self.owner(name).fill(name, group)

    def buffers(self, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """The state buffers of a param of ``shape``, in chain order, with their shapes."""
        return {k: v for tr in self.transforms for k, v in tr.buffers(tuple(shape)).items()}

    def host_init(self, name: str) -> float:
        return 0.0 if name == "step" else self.owner(name).host_init(name)

    def advance(self, group: Mapping[str, Any], t: float, host: Host) -> None:
        for tr in self.advancing:
            tr.advance(group, t, host)

    def host_dtype(self, name: str) -> torch.dtype | None:
        """The dtype of host scalar ``name``: float64 for a transform's :attr:`~Transform.wide`
        ones, else ``None`` (torch.optim's ``step`` dtype)."""
        return torch.float64 if name != "step" and name in self.owner(name).wide else None

    def scalars(self, group: Mapping[str, Any], t: float, host: Mapping[str, float]) -> list[Scalars]:
        # (every step of a small model computes these: a plain loop is a third of the
        # cost of unpacking the transforms and a comprehension)
        out = []
        for tr in self.before:
            out.append(tr.scalars(group, t, host))
        if not self.paced:
            out.append(self.descend.scalars(group, t, host))
            return out
        pace = 1.0
        for tr in self.paced:
            pace = pace * tr.pace(group, t)
        out.append(self.descend.scalars(group, t, host, pace=pace))
        return out

    def update(self, p: Tensor, g: Tensor, s: dict[str, Tensor], hs: Sequence[Scalars]) -> None:
        """One step, elementwise, in place on ``p`` and ``s``."""
        prepare, *moments, descend = self.transforms
        g = prepare.apply(g, g, p, s, hs[0])
        u, scale = g, None
        for tr, h in zip(moments, hs[1:-1]):
            if scale is not None and not tr.linear:
                u, scale = u * scale, None
            out = tr.apply(u, g, p, s, h)
            if isinstance(out, tuple):
                u, factor = out
                scale = factor if scale is None else scale * factor
            else:
                u = out
        if scale is not None and not descend.linear:
            u, scale = u * scale, None
        step = hs[-1] if scale is None else {**hs[-1], "lr": hs[-1]["lr"] * scale}
        descend.apply(u, g, p, s, step)

    def __repr__(self) -> str:
        return "Chain(" + ", ".join(map(repr, self.transforms)) + ")"


def square(x: Tensor) -> Tensor:
    return x * x


# Every formula is spelled with elementary operations only (+, −, ×, ÷, √, max, |·|,
# sign), each correctly rounded, in one order. The compiled kernel evaluates exactly
# these operations in that order (no FMA contraction, no reassociation), so the eager
# path and the kernel give the same bits, and the engine may run eagerly while a kernel
# is being built without the numbers depending on when it arrives. Fused ATen ops
# (lerp_, addcmul_, add_ with alpha) round differently and are not used. Coefficients
# come ready-made (1 − β computed on the host, see ``ema``): arithmetic on scalars
# inside a compiled kernel is redone for every element (it cost Adam's CPU kernel 10 %).


def ema(beta: float, name: str = "beta") -> dict[str, float]:
    """The coefficients of an exponential moving average: ``β`` and ``1 − β``."""
    if name == "beta":  # (the usual name, without making its complement's name each step)
        return {"beta": beta, "1-beta": 1 - beta}
    return {name: beta, "1-" + name: 1 - beta}


def sqrt(x: Tensor) -> Tensor:
    """√x, correctly rounded on every path.

    ATen's eager CPU square root (MKL's vector math) can be 1 ulp off, where a compiled
    kernel uses the hardware's IEEE square root. Eagerly, float32 goes through float64:
    √ of a p-bit float is never within 2^−(2p+3) (relative; 2⁻⁵¹ for float32) of a
    rounding midpoint, and float64's root errs by at most 2⁻⁵², so rounding back gives
    the correctly rounded result. float64 uses NumPy's square root, which is IEEE's,
    when NumPy is installed.
    """
    if x.device.type != "cpu" or _tracing() or (x.requires_grad and x.dtype == torch.float64):
        # (a differentiable step: NumPy's root would cut the graph; torch's own
        # differentiable step takes ATen's)
        return x.sqrt()
    if x.dtype != torch.float64:
        return x.double().sqrt().to(x.dtype)
    np = _numpy()
    return x.sqrt() if np is None else torch.from_numpy(np.sqrt(x.numpy()))


def exact_sqrt(dtype: torch.dtype) -> bool:
    """Whether eager :func:`sqrt` on the CPU is correctly rounded for ``dtype``."""
    return dtype != torch.float64 or _numpy() is not None


@functools.cache
def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # NumPy is optional; float64 then has no exact eager root
        return None
    return numpy


def _tracing() -> bool:
    return torch.compiler.is_compiling() or _is_exporting()


def _is_exporting() -> bool:
    probe = getattr(torch.compiler, "is_exporting", None)
    return bool(probe and probe())


def kept(x: Tensor, *by: Any) -> Tensor:
    """``x``, or a copy of it when autograd keeps it to differentiate one of ``by`` (a
    ``differentiable=True`` step, a tensor that requires grad) and a later in-place
    update overwrites it. Only there: a compiled kernel never sees a tensor that
    requires grad, so its code and numbers are unchanged."""
    if any(isinstance(b, Tensor) and b.requires_grad for b in by):
        return x.clone()
    return x


def axpy(y: Tensor, a: Any, x: Tensor) -> Tensor:
    """y + a·x (a new tensor)."""
    return y + a * x


def sub_(y: Tensor, a: Any, x: Tensor) -> Tensor:
    """y ← y − a·x."""
    return y.sub_(a * x)


def decay_add_(v: Tensor, keep: Any, take: Any, x: Tensor) -> Tensor:
    """v ← keep·v + take·x."""
    return v.mul_(keep).add_(take * x)


def mix(m: Tensor, x: Tensor, beta: Any, rest: Any) -> Tensor:
    """β·m + (1 − β)·x as a new tensor, with ``rest`` = 1 − β."""
    return beta * m + rest * x


def mix_(m: Tensor, x: Tensor, beta: Any, rest: Any) -> Tensor:
    """m ← β·m + (1 − β)·x, with ``rest`` = 1 − β."""
    return m.mul_(beta).add_(rest * x)


def mix_sq_(v: Tensor, x: Tensor, beta: Any, rest: Any) -> Tensor:
    """v ← β·v + (1 − β)·x², with ``rest`` = 1 − β."""
    return v.mul_(beta).add_(rest * x * x)


__all__ = [
    "Chain",
    "Descend",
    "Fixed",
    "Host",
    "Hyper",
    "Prepare",
    "Scalars",
    "TensorArithmetic",
    "Transform",
    "axpy",
    "decay_add_",
    "ema",
    "folded",
    "keep_graph",
    "kept",
    "mix",
    "mix_",
    "mix_sq_",
    "read",
    "sqrt",
    "square",
    "sub_",
    "tensor_arithmetic",
]
