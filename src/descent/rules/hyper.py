"""Reading a param group's hyperparameters on the host, as torch.optim reads them.

Everything here runs before a step's numbers reach the math (``Transform.scalars``), so
none of it is part of a compiled kernel's code.
"""

from __future__ import annotations

import array
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

#: How a transform names a hyperparameter of its param group: a key (``"lr"``), a key
#: and an index (``("betas", 0)``), or a function of the group.
Hyper = str | tuple[str, int] | Callable[[Mapping[str, Any]], float]

Scalars = dict[str, Any]


def float32(x: float) -> float:
    """``x`` rounded to the nearest float32 (ties to even), as a Python float."""
    return array.array("f", [x])[0]


class Host(dict):
    """A step's host scalars, as :meth:`Transform.advance` gets them: each name's value
    after the step before (a Python float; in a differentiable step, a 0-d tensor where
    it carries a gradient). The rule assigns the new values.

    Each scalar is kept in its tensor's dtype (torch.optim's ``step`` dtype, float32 by
    default, or float64 for a transform's ``wide`` ones), and a value assigned is rounded
    to it once, as an in-place op on a 0-d tensor rounds its result: a product of two
    float32 values is exact in float64, so rounding it once gives the float32 product.
    :meth:`num` rounds an operand as that op first rounds a Python number.
    """

    __slots__ = ("narrow",)

    def __init__(self, values: Mapping[str, Any], narrow: frozenset[str] | set[str]):
        super().__init__(values)
        #: the names kept in float32
        self.narrow = narrow

    def num(self, name: str, x: Any) -> Any:
        """``x`` as an op on host scalar ``name`` sees a Python number: rounded to float32
        where the scalar is float32 (the CPU's compute type for it), else as it is."""
        return float32(x) if isinstance(x, float) and name in self.narrow else x

    def rounded(self) -> dict[str, Any]:
        """The values as their tensors would hold them."""
        return {k: self.num(k, float(v) if type(v) is int else v) for k, v in self.items()}


class _Graph(threading.local):
    on = False


_graph = _Graph()


@contextlib.contextmanager
def keep_graph() -> Iterator[None]:
    """Within it, :func:`read` hands out a hyperparameter tensor that requires grad as
    the tensor itself, so a ``differentiable=True`` step's numbers carry their gradient
    back to it (a hypergradient); host arithmetic on it then runs as tensor ops."""
    before, _graph.on = _graph.on, True
    try:
        yield
    finally:
        _graph.on = before


def _tracked(value: Any) -> bool:
    return _graph.on and isinstance(value, Tensor) and value.requires_grad


def read(group: Mapping[str, Any], ref: Hyper) -> float:
    """The value of hyperparameter ``ref`` in ``group`` as a Python float (under
    :func:`keep_graph`, a tensor that requires grad as a 0-d tensor)."""
    if type(ref) is str:
        value = group[ref]
        if type(value) is float:  # the common case, first
            return value
    elif isinstance(ref, tuple):
        name, index = ref
        value = group[name][index]
        if type(value) is float:  # (betas)
            return value
    elif callable(ref):
        value = ref(group)
    else:
        value = group[ref]
    if isinstance(value, Tensor):
        if _tracked(value):
            return value.reshape(())  # type: ignore[return-value]
        value = value.item()
    return float(value)


class TensorArithmetic:
    """Scalar arithmetic as torch.optim does it on a 0-d tensor hyperparameter.

    torch.optim keeps a tensor ``lr`` a tensor through ``lr / (1 − β₁ᵗ)``,
    ``1 − lr·λ`` …, so each of those operations rounds to the tensor's dtype (and each
    Python number it meets is first rounded to float32, the CPU's compute type for
    float32 and half tensors). :meth:`op` rounds a result, :meth:`num` an operand; with
    them a rule spells torch's expression in the same order and gets its numbers.
    Rounding once from float64 is exact here: float64 carries more than twice float32's
    precision, so ``+ − × ÷`` of two float32 values rounded to float64 and then to
    float32 equal the correctly rounded float32 result.
    """

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def num(self, x: float) -> float:
        return float32(x)

    def op(self, x: float) -> float:
        x = float32(x)
        if self.dtype != torch.float32:
            x = torch.tensor(x, dtype=torch.float32).to(self.dtype).item()
        return x


def tensor_arithmetic(group: Mapping[str, Any], ref: Hyper = "lr") -> TensorArithmetic | None:
    """How torch.optim rounds arithmetic on hyperparameter ``ref`` of ``group``: a
    :class:`TensorArithmetic` when it is a tensor of a precision below float64, else
    ``None`` (Python floats and float64 tensors compute in float64 as they are)."""
    if type(ref) is str:
        value = group[ref]
        if type(value) is float:  # the common case, first
            return None
    elif callable(ref):
        return None
    else:
        value = group[ref[0]][ref[1]] if isinstance(ref, tuple) else group[ref]
    if _tracked(value):  # a differentiable step computes with the tensor itself
        return None
    if isinstance(value, Tensor) and value.dtype != torch.float64 and value.is_floating_point():
        return TensorArithmetic(value.dtype)
    return None


def folded(group: Mapping[str, Any], factor: float, divisor: float, ref: Hyper = "lr") -> float:
    """``factor`` = 1/``divisor``, as the scalar a rule leaves for the step: there
    ``lr·factor`` must equal torch.optim's ``lr / divisor``, which a tensor ``lr`` rounds
    to its own dtype (:class:`TensorArithmetic`)."""
    arith = tensor_arithmetic(group, ref)
    lr = read(group, ref) if arith is not None else 0.0
    if arith is None or lr == 0.0:
        return factor
    return arith.op(lr / arith.num(divisor)) / lr


class Fixed:
    """A hyperparameter fixed for every group (``Fixed(0.1)``), where torch.optim reads
    the constructor's value rather than the group's. Compares by value; its value is
    never compiled into a kernel (numbers reach kernels at run time)."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, group: Mapping[str, Any]) -> float:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fixed) and other.value == self.value

    def __hash__(self) -> int:
        return hash((Fixed, self.value))

    def __repr__(self) -> str:
        return f"Fixed({self.value!r})"
