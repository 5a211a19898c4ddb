"""The base of every descent optimizer: a ``torch.optim.Optimizer`` whose step is a rule."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer
from torch.optim.optimizer import _global_optimizer_post_hooks as _global_post_hooks
from torch.optim.optimizer import _global_optimizer_pre_hooks as _global_pre_hooks

from ..engine import Engine, differentiable, matrix, sparse, tracked_list, tracked_state
from ..engine.errors import SparseGradient
from ..engine.formats import CODES_SUFFIX, SCALE_SUFFIX
from ..rules.base import Chain, Transform
from .validation import COMMON, Check, validate


class RuleOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` whose update is a :class:`~descent.rules.Chain`.

    Subclasses implement :meth:`rule` (the moment transforms for a param group) and
    declare which group keys change the chain's structure (:attr:`flags`). Everything
    else — param groups, ``state_dict`` in torch.optim's layout, schedulers, hooks,
    closures, the fused flat-storage engine — comes from here.

    Engine keywords (every descent optimizer takes them):

    ``flat`` (default ``True``)
        Re-home each group's params into one contiguous buffer per device and dtype, so
        the step is one kernel whatever the number of tensors. ``flat=False`` keeps
        your params' storage untouched and runs the same rule tensor by tensor.
    ``compile`` (``"auto"``, ``True`` or ``False``)
        Run the step as one kernel over the flat buffers, compiled ahead of time once per
        machine and loaded from the kernel cache. ``"auto"`` (every size) steps eagerly,
        with the same bits, while a missing kernel builds in the background; ``True``
        waits for it; ``False`` always steps eagerly. ``DESCENT_COMPILE`` (0/1/auto)
        overrides it. See docs/engine.md.
    ``skip_nonfinite`` (default ``False``)
        A step whose gradients hold an inf or NaN leaves params, state and step counts
        exactly as they were and is counted in :attr:`skipped_steps`. The check is part
        of the step's kernel (a step of several runs checks every gradient before the
        first write). Off, as in torch.optim: a non-finite gradient reaches the params
        and state (Lion included).
    ``state_dtype`` (default ``None``: the param's dtype, as torch.optim)
        ``"bfloat16"``: state stored in bfloat16 (computed in float32, written with
        stochastic rounding); ``"8bit"``: block-wise 8-bit codes with one float32 scale
        per 256 elements, kept under ``"<name>.codes"`` and ``"<name>.absmax"`` in
        ``optimizer.state`` (``descent.dequantize_state_dict`` gives torch.optim's keys).
        Params under 4,096 elements keep full-precision state. The rule sees float32
        either way; the kernel decodes and encodes in the same pass. See docs/engine.md,
        "State formats".
    ``stochastic_rounding`` (default ``False``)
        bfloat16 params: the update is computed in float32 and written back rounded
        stochastically (deterministic: the bits hash the step and the position), so
        updates below half a bfloat16 ulp are not lost.
    """

    #: torch.optim keeps a per-tensor ``step`` in this optimizer's state.
    state_step: ClassVar[bool] = True
    #: Group keys whose truth value changes the chain's structure.
    flags: ClassVar[tuple[str, ...]] = ("maximize", "weight_decay", "decoupled_weight_decay")
    #: Hyperparameter checks, by group key.
    checks: ClassVar[Mapping[str, Check]] = COMMON
    #: Whether weight decay is decoupled when a group does not say.
    decoupled_default: ClassVar[bool] = False
    #: The group key that says so.
    decoupled_key: ClassVar[str] = "decoupled_weight_decay"
    #: Sparse gradients are stepped (on the rows they name), as torch.optim's SGD and Adagrad do.
    sparse_grads: ClassVar[bool] = False
    #: Some chain of this class may hold a whole-tensor transform (Muon, Adafactor): its
    #: groups are stepped by shape (:mod:`descent.engine.matrix`), outside the flat engine.
    whole_rules: ClassVar[bool] = False

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        flat: bool = True,
        compile: bool | str = "auto",
        skip_nonfinite: bool = False,
        state_dtype: Any = None,
        stochastic_rounding: bool = False,
    ):
        if defaults.get("fused") and defaults.get("differentiable"):
            raise RuntimeError("`fused` does not support `differentiable`")
        if defaults.get("differentiable") and (state_dtype is not None or stochastic_rounding):
            raise ValueError("state_dtype and stochastic_rounding do not combine with differentiable=True")
        self._validate(defaults)
        self._chains: dict[tuple, Chain] = {}
        #: the handle of descent.step_in_backward while the step runs inside backward
        self._in_backward: Any = None
        #: per param group (by id): its flag values last seen and their chain
        self._last_chain: dict[int, tuple[tuple, Chain]] = {}
        self._engine = Engine(
            self.chain,
            name=type(self).__name__,
            state_step=self.state_step,
            flat=flat,
            compile=compile,
            skip_nonfinite=skip_nonfinite,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
        )
        super().__init__(params, defaults)
        # A mapping that counts its own mutations: the engine notices an edit between
        # steps by comparing one number (see descent.engine.state).
        self.state = tracked_state(self.state)
        self._engine.prefetch(self._stepped_groups())

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because a gradient held an inf or NaN (``skip_nonfinite=True``)."""
        return self._engine.skipped

    def _validate(self, values: Mapping[str, Any]) -> None:
        validate(values, self.checks)
        self.check(values)

    def check(self, group: Mapping[str, Any]) -> None:
        """Constraints between hyperparameters (each one alone is checked by :attr:`checks`)."""

    # -- the rule ------------------------------------------------------------------------
    def rule(self, group: Mapping[str, Any]) -> Sequence[Transform]:
        """The moment transforms of this optimizer for ``group`` (between Prepare and
        Descend, which every chain has)."""
        raise NotImplementedError

    def chain(self, group: Mapping[str, Any]) -> Chain:
        """The full chain for ``group``, built once per structure."""
        raw = tuple(map(group.get, self.flags))
        last = self._last_chain.get(id(group))
        if last is not None and last[0] == raw:
            return last[1]
        key = tuple(map(_truth, raw))
        chain = self._chains.get(key)
        if chain is None:
            decay = _truth(group.get("weight_decay", 0))
            decoupled = bool(group.get(self.decoupled_key, self.decoupled_default))
            chain = Chain(
                self.rule(group),
                maximize=bool(group.get("maximize", False)),
                l2=decay and not decoupled,
                decoupled=decay and decoupled,
            )
            self._chains[key] = chain
        self._last_chain[id(group)] = (raw, chain)
        return chain

    # -- torch.optim.Optimizer -----------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the loss)."""
        # torch.optim wraps every step in a profiler range and its step hooks (about 9 µs
        # a call, a third of a small model's step); take that path only when a hook is
        # registered or a profiler is recording, so both still see every step. A subclass
        # that overrides step() gets torch's wrapper on its own step, which has run them.
        if self._in_backward is not None:
            raise RuntimeError(
                f"this {type(self).__name__} steps inside backward (descent.step_in_backward): every "
                "param was already updated as its gradient arrived. Remove optimizer.step() from the "
                "loop (GradScaler and clipping by the global norm need the gradients before any "
                "update, so they cannot combine with it); handle.remove() goes back to step()"
            )
        if torch.compiler.is_compiling():  # called by name: dynamo folds it to a constant
            # Inside a torch.compile'd function: the step runs as it is, outside the graph
            # (one graph break), instead of being traced op by op (its host bookkeeping
            # changes every step, so a trace would be re-made every step).
            return _outside_graph(self, closure)
        if type(self).step is RuleOptimizer.step and (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_pre_hooks
            or _global_post_hooks
            or _profiling()
        ):
            return self._hooked_step(closure)
        return self._step(closure)

    step.hooked = True  # type: ignore[attr-defined]  # keeps torch from wrapping it again

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.defaults.get("fused"):
            self._check_fused()
        groups = self.param_groups
        # the common case: every group stepped by the engine (nothing by shape, nothing
        # through autograd), without looking for the others
        if not self.whole_rules:
            for group in groups:
                if group.get("differentiable"):
                    break
            else:  # (the engine steps in any grad mode; see Engine.step)
                self._engine_step(groups)
                return loss
        grad = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # torch.no_grad() without a context object per step
        try:
            whole = self._whole_groups()
            if whole and not self._whole_ready(whole):
                return loss
            stepped = self._stepped_groups()
            if stepped or not whole:
                self._engine_step(stepped)
            if whole:
                self._whole_steps = getattr(self, "_whole_steps", 0) + 1
            for group in whole:  # matrix rules: params batched by shape (descent.engine.matrix)
                e = self._engine
                matrix.step(
                    self.chain(group),
                    group,
                    self.state,
                    self.steps_in_state(group),
                    type(self).__name__,
                    state_dtype=e.state_dtype,
                    sr=e.sr,
                    count=self._whole_steps,
                )
        finally:
            torch._C._set_grad_enabled(grad)
        for group in groups:
            if group.get("differentiable"):  # its step through autograd, as torch.optim's
                with torch.enable_grad():
                    differentiable.step(
                        self.chain(group), group, self.state, self.state_step, type(self).__name__
                    )
        return loss

    def _engine_step(self, groups: list[dict[str, Any]]) -> None:
        """The engine's step of ``groups``; where a gradient is sparse (the engine refused
        before writing anything), :meth:`_sparse_step` instead."""
        try:
            self._engine.step(groups, self.state)
        except SparseGradient:
            with torch.no_grad():
                self._sparse_step()

    def _stepped_groups(self) -> list[dict[str, Any]]:
        """The groups the flat engine steps (a differentiable one steps through autograd, one
        whose chain sees whole tensors by shape)."""
        groups = self.param_groups
        if not self.whole_rules and not any(g.get("differentiable") for g in groups):
            return groups
        return [g for g in groups if not g.get("differentiable") and not self._sees_whole(g)]

    def steps_in_state(self, group: Mapping[str, Any]) -> bool:
        """Whether ``group``'s state publishes a ``step`` (a group stepped by shape may say
        otherwise than :attr:`state_step`, as MuonAdamW's Muon groups do)."""
        return self.state_step

    def _sees_whole(self, group: dict[str, Any]) -> bool:
        return self.whole_rules and self.chain(group).whole

    def _whole_groups(self) -> list[dict[str, Any]]:
        if not self.whole_rules:
            return []
        return [g for g in self.param_groups if not g.get("differentiable") and self.chain(g).whole]

    def _whole_ready(self, whole: list[dict[str, Any]]) -> bool:
        """Checks before a step that has matrix rules writes anything: torch.optim's refusals,
        and with ``skip_nonfinite`` every gradient's finiteness (False: skip the step)."""
        for group in whole:
            matrix.check(group, type(self).__name__)
        e = self._engine
        if e.guard and not matrix.finite([*whole, *self._stepped_groups()]):
            e.skipped += 1
            return False
        return True

    def _sparse_step(self) -> None:
        """A step in which some gradients are sparse (the engine refused it before writing
        anything): torch.optim's error for an optimizer that takes none, else the dense
        params through the engine and each sparse one on the rows its gradient names."""
        found = [
            (group, p)
            for group in self._stepped_groups()
            for p in group["params"]
            if p.grad is not None and p.grad.layout != torch.strided
        ]
        for group in {id(g): g for g, _ in found}.values():
            self.check_sparse(group)
        if self._engine.state_dtype is not None:
            raise RuntimeError(f"{type(self).__name__} with state_dtype= does not take sparse gradients")
        grads = [p.grad for _, p in found]
        for _, p in found:
            p.grad = None  # the engine leaves a param without a gradient as it is
        try:
            self._engine.step(self._stepped_groups(), self.state)
        finally:
            for (_, p), g in zip(found, grads):
                p.grad = g
        for (group, p), g in zip(found, grads):
            sparse.rows(self.chain(group), group, self.state, self.state_step, p, g)

    def _dispatch(self, closure: Callable[[], Any] | None = None) -> Any:
        return self._step(closure)

    _hooked_step = Optimizer.profile_hook_step(_dispatch)

    def check_sparse(self, group: Mapping[str, Any]) -> None:
        """Raise torch.optim's error when ``group`` cannot take a sparse gradient."""
        if not self.sparse_grads:
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")

    def _check_fused(self) -> None:
        """torch.optim's refusal of ``fused=True`` where its fused kernels do not run (a
        meta or integer param), made as there: at the first step that has gradients."""
        if getattr(self, "_fused_checked", False):
            return
        from torch.optim.optimizer import _device_dtype_check_for_fused

        stepped = [p for g in self.param_groups if g.get("fused") for p in g["params"] if p.grad is not None]
        for p in stepped:
            _device_dtype_check_for_fused(p)
        self._fused_checked = bool(stepped)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        given = {k: v for k, v in param_group.items() if k != "params"}
        validate(given, self.checks)
        self._validate({**self.defaults, **given})
        _unwrapped("add_param_group")(self, param_group)
        group = self.param_groups[-1]
        group["params"] = tracked_list(group["params"])  # edits of the list are noticed

    def state_dict(self) -> dict[str, Any]:
        out = _unwrapped("state_dict")(self)
        # plain dicts, as torch.optim's: loadable with torch.load(weights_only=True)
        out["state"] = {k: dict(v) if isinstance(v, dict) else v for k, v in out["state"].items()}
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        _keep_codes(self, state_dict)
        self.state = tracked_state(self.state)  # torch.optim built a new mapping, which only it held
        self._engine.reload = True

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        options = state.pop("_engine_options", {})
        # (torch's __setstate__ adds "differentiable" to the defaults; a group gets only the
        # keys this class had, so a Muon group stays torch.optim.Muon's)
        known = set(self.__dict__.get("defaults", state.get("defaults", {})))
        super().__setstate__(state)
        self.state = tracked_state(self.state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                if key in known:
                    group.setdefault(key, value)
            group["params"] = tracked_list(group["params"])
        if "_engine" not in self.__dict__:  # a copy or an unpickled optimizer: an engine of its own
            self._engine = Engine(self.chain, name=type(self).__name__, state_step=self.state_step, **options)
            self._chains, self._last_chain, self._in_backward = {}, {}, None

    def __getstate__(self) -> dict[str, Any]:
        out = super().__getstate__()
        e = self._engine
        out["_engine_options"] = {
            "flat": e.flat,
            "compile": e.compile,
            "skip_nonfinite": e.guard,
            "state_dtype": e.state_dtype,
            "stochastic_rounding": e.sr,
        }
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients as torch.optim does.

        ``set_to_none=True`` (the default) sets every ``p.grad`` to ``None``: a param
        that the next backward does not reach keeps ``None`` and does not move, and the
        step reads the gradients backward makes where they lie.
        ``set_to_none=False`` gives the params that have a gradient zeroed views of one
        flat gradient buffer (the first time; later calls zero it in one op): backward
        accumulates into it and the step reads it in one pass.
        """
        if set_to_none or not self._engine.hold_grads(self.param_groups):
            _unwrapped("zero_grad")(self, set_to_none=set_to_none)


def _keep_codes(opt: RuleOptimizer, state_dict: dict[str, Any]) -> None:
    """8-bit state as the checkpoint holds it: torch.optim's load casts every state tensor
    of a float param to the param's dtype, codes and block scales included, which would
    turn codes into numbers."""
    saved = [i for g in state_dict["param_groups"] for i in g["params"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    where = dict(zip(saved, params))
    for k, entry in state_dict["state"].items():
        p = where.get(k)
        if p is None or not isinstance(entry, dict):
            continue
        for name, v in entry.items():
            if not isinstance(v, torch.Tensor):
                continue
            if v.dtype == torch.uint8 or name.endswith((CODES_SUFFIX, SCALE_SUFFIX)):
                opt.state[p][name] = v.to(device=p.device, copy=True)


_profiling = torch._C._autograd._profiler_enabled


def _uncompiled_step(opt: RuleOptimizer, closure: Callable[[], Any] | None) -> Any:
    if type(opt).step is RuleOptimizer.step:
        return opt._hooked_step(closure)
    return opt._step(closure)


#: Dynamo runs this as it is (it imports dynamo on the first call, which only happens
#: while dynamo is tracing, so already loaded). Hooks and profiler ranges run as usual.
_outside_graph = torch._disable_dynamo(_uncompiled_step, recursive=True)


def _unwrapped(name: str) -> Callable[..., Any]:
    """torch.optim.Optimizer's method ``name``, without its ``torch._disable_dynamo``
    wrapper while dynamo is not loaded. The wrapper only keeps dynamo from tracing the
    method, and sets that up by importing dynamo at the first call: a second (measured
    1.0 s) of every process's first step, spent on a compiler this engine does not use."""
    fn = getattr(Optimizer, name)
    return fn if "torch._dynamo" in sys.modules else getattr(fn, "__wrapped__", fn)


def _truth(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(value.item())
    return bool(value)
