"""The arena's records: what it measured and what it concluded, as frozen dataclasses.

Measuring and presenting meet here. A session builds a :class:`Results` (runs → study
records → recommendation) and writes it to ``results.json``; the figures, the HTML report
and the terminal summary read a :class:`Results` and nothing else, so
``Results.from_json(path)`` redraws them without training anything.

The JSON Schema of ``results.json`` (:data:`SCHEMA`) is generated from these classes'
fields and types, and ``from_json`` reads a file back through the same types, so the file,
its schema and the code cannot drift apart. Numbers that do not exist (a diverged run's
loss, a target never reached) are ``null``, never ``NaN``/``Infinity``.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal, Union

SCHEMA_ID = "descent.arena/results/2"

Regime = Literal["full", "minibatch", "sgd"]
Phase = Literal["defaults", "lr", "knob", "tuned"]
Budget = Literal["tuned", "defaults"]
BUDGETS: tuple[Budget, ...] = ("tuned", "defaults")


def score(loss: float | None, diverged: bool | int) -> float:
    """The number every ranking and selection in the arena compares (lower is better):
    the final validation loss (of a run, or its mean over a setting's seeds), and +∞
    when the loss is missing or any seed diverged."""
    return math.inf if diverged or loss is None else float(loss)


def finite(x: float) -> float | None:
    """``x``, or ``None`` where JSON has no number for it (±∞, NaN)."""
    return x if math.isfinite(x) else None


def _at_least(n: int) -> Any:
    return field(metadata={"schema": {"minimum": n}})


# -- measured ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Final:
    """A run's last evaluation."""

    train_loss: float | None
    train_metric: float | None
    val_loss: float | None
    val_metric: float | None


@dataclass(frozen=True)
class Curve:
    """A run's evaluations: at step 0 and ``EVALS`` times during training."""

    step: list[int]
    train_loss: list[float | None]
    val_loss: list[float | None]
    val_metric: list[float | None]


@dataclass(frozen=True)
class Run:
    """One training run: its settings and what it measured."""

    id: str  # task/regime/optimizer/phaseN
    task: str
    regime: Regime
    optimizer: str
    phase: Phase
    seed: int
    lr: float
    hyper: dict[str, Any]  # the knob's value (and any other setting given)
    steps: int
    batch_size: int
    epochs: float
    diverged: bool
    final: Final | None  # None: diverged
    steps_to_target: int | None
    time_to_target: float | None
    train_time: float | None
    curve: Curve

    @property
    def score(self) -> float:
        """The selection score: :func:`score` of its final validation loss."""
        return score(self.final.val_loss if self.final else None, self.diverged)


# -- per study -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    """Over the seeds of one setting (missing values left out)."""

    mean: float
    std: float
    min: float
    max: float
    n: int


@dataclass(frozen=True)
class Summary:
    """One setting's seeds: final metrics, divergences, steps and time to target."""

    train_loss: Stats | None
    val_loss: Stats | None
    train_metric: Stats | None
    val_metric: Stats | None
    n: int
    diverged: int
    reached: int
    steps_to_target: float | None  # median over the seeds that reached the target
    time_to_target: float | None
    train_time: float | None
    #: :func:`score` of the mean validation loss, ``None`` for +∞ (``rank_score`` reads it)
    score: float | None

    @property
    def rank_score(self) -> float:
        return score(self.score, self.diverged)

    @property
    def spread(self) -> float:
        """The validation loss's std over seeds (0 when there is none)."""
        return 0.0 if self.score is None or self.val_loss is None else self.val_loss.std


@dataclass(frozen=True)
class Knob:
    name: str
    tried: list[Any]


@dataclass(frozen=True)
class Best:
    lr: float | None
    hyper: dict[str, Any]
    id: str | None


@dataclass(frozen=True)
class Trial:
    """A tuning trial as the lr-sensitivity plot shows it (``val_loss`` None: diverged)."""

    phase: Phase
    lr: float
    hyper: dict[str, Any]
    val_loss: float | None


@dataclass(frozen=True)
class StudyRecord:
    """One optimizer on one task in one regime: its tuning and its two summaries."""

    task: str
    regime: Regime
    optimizer: str
    budget: int
    steps: int
    lr_grid: list[float]
    knob: Knob | None
    best: Best
    defaults: Summary
    tuned: Summary
    sensitivity: list[Trial]
    lr_window_decades: float | None

    def summary(self, budget: Budget) -> Summary:
        return self.tuned if budget == "tuned" else self.defaults


# -- concluded -----------------------------------------------------------------------------
@dataclass(frozen=True)
class BoardRow:
    """One optimizer over the problems of a scope."""

    mean_rank: float
    wins: int
    top: int
    worst_rank: float
    problems: int
    profile: list[float]  # fraction of problems within τ× the best, per τ of ``taus``


@dataclass(frozen=True)
class Choice:
    tuned: str
    defaults: str


@dataclass(frozen=True)
class Recommendation:
    optimizer: str
    choice: dict[str, Choice]  # scope ("all" or a regime) → the best per budget
    leaderboards: dict[str, dict[str, dict[str, BoardRow]]]  # scope → budget → optimizer → row
    taus: list[float]
    problems: list[list[str]]  # [task, regime]
    #: budget → per problem (in ``problems`` order) → optimizer → its rank there
    ranks: dict[str, list[dict[str, float]]]
    text: list[str]  # the headline, then the reasons


# -- the whole -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RegimeInfo:
    steps: int
    batch_size: int
    epochs: float


@dataclass(frozen=True)
class TaskInfo:
    name: str
    title: str
    description: str
    metric_name: str
    higher_is_better: bool
    target: float | None
    chance: float | None
    tags: list[str]
    n_train: int
    n_val: int
    n_params: int
    regimes: dict[str, RegimeInfo]


@dataclass(frozen=True)
class KnobValues:
    name: str
    values: list[Any]


@dataclass(frozen=True)
class OptimizerInfo:
    key: str
    label: str
    color: str
    default_lr: float
    knob: KnobValues | None
    lr_range: list[float]


@dataclass(frozen=True)
class Landscape:
    """One picture of the Landscapes section (``path`` relative to the report)."""

    surface: str
    title: str
    path: str
    tuned: dict[str, Any]


@dataclass(frozen=True)
class Settings:
    quick: bool
    tasks: list[str]
    optimizers: list[str]
    budget: int = _at_least(1)
    seeds: int = _at_least(1)
    workers: int
    step_scale: float
    rules: dict[str, str]  # the protocol in words


@dataclass(frozen=True)
class Timing:
    runs: int
    training_s: float
    figures_s: float
    landscapes_s: float
    total_s: float


@dataclass(frozen=True)
class Results:
    """Everything a session measured and concluded: the content of ``results.json``."""

    schema: str = field(metadata={"schema": {"const": SCHEMA_ID}})
    created: str
    environment: dict[str, Any]
    settings: Settings
    tasks: list[TaskInfo]
    optimizers: list[OptimizerInfo]
    runs: list[Run]
    studies: list[StudyRecord]
    recommendation: Recommendation
    landscapes: list[Landscape] | None
    landscapes_note: str | None
    timing: Timing

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Strict JSON (no NaN/Infinity); also written to ``path`` when given."""
        text = json.dumps(jsonable(self), indent=1, allow_nan=False) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Results:
        """Read a ``results.json``; ``ValueError`` naming the file and the first bad value."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(path)!r} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_ID:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{str(path)!r} is not a {SCHEMA_ID} results file (schema: {found!r})")
        try:
            return load(cls, data)
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: {exc}") from None

    # lookups the presentation uses
    def studies_of(self, task: str, regime: str) -> list[StudyRecord]:
        """A problem's study records, in plan (optimizer) order."""
        return [s for s in self.studies if s.task == task and s.regime == regime]

    def runs_of(self, task: str, regime: str, optimizer: str, *phases: Phase) -> list[Run]:
        """A study's runs in protocol order, of the given phases (all when none)."""
        runs = self._runs.get((task, regime, optimizer), [])
        return [r for r in runs if not phases or r.phase in phases]

    def optimizer(self, key: str) -> OptimizerInfo:
        return next(o for o in self.optimizers if o.key == key)

    @cached_property
    def _runs(self) -> dict[tuple[str, str, str], list[Run]]:
        out: dict[tuple[str, str, str], list[Run]] = {}
        for r in self.runs:
            out.setdefault((r.task, r.regime, r.optimizer), []).append(r)
        return out


# -- JSON ----------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """The one JSON normaliser: dataclasses → objects (in field order), tuples → lists,
    paths → POSIX strings, non-finite floats → ``None``; keys become strings."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} value {value!r} has no JSON form")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` was allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp}")
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def load(tp: Any, value: Any, where: str = "$") -> Any:
    """``value`` (parsed JSON) as an instance of ``tp``, checked against the type."""
    tp, nullable = _optional(tp)
    if value is None:
        if nullable or tp is Any:
            return None
        raise ValueError(f"{where} is null, expected {_name(tp)}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} is {value!r}, expected one of {list(args)}")
        return value
    if origin is list:
        _expect(value, list, where)
        return [load(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _expect(value, dict, where)
        return {k: load(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if is_dataclass(tp):
        _expect(value, dict, where)
        names = [f.name for f in fields(tp)]
        missing = [n for n in names if n not in value]
        extra = [k for k in value if k not in names]
        if missing or extra:
            what = f"missing {missing}" if missing else f"unexpected {extra}"
            raise ValueError(f"{where}: {what} for {tp.__name__}")
        hints = _hints(tp)
        return tp(**{n: load(hints[n], value[n], f"{where}.{n}") for n in names})
    _expect(value, tp, where)
    return value


def _expect(value: Any, tp: type, where: str) -> None:
    ok = isinstance(value, tp) and not (isinstance(value, bool) and tp in (int, float))
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{where} is {value!r}, expected {_name(tp)}")


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def schema_of(tp: Any) -> dict[str, Any]:
    """The JSON Schema of a record type, from its fields' types."""
    tp, nullable = _optional(tp)
    if nullable:
        return {"anyOf": [schema_of(tp), {"type": "null"}]}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return {}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": schema_of(args[0])}
    if origin is dict:
        if args[1] is Any:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": schema_of(args[1])}
    if is_dataclass(tp):
        hints = _hints(tp)
        props = {f.name: {**schema_of(hints[f.name]), **f.metadata.get("schema", {})} for f in fields(tp)}
        return {"type": "object", "required": list(props), "properties": props, "additionalProperties": False}
    simple = {
        bool: {"type": "boolean"},
        int: {"type": "integer", "minimum": 0},
        float: {"type": "number"},
        str: {"type": "string"},
    }
    return dict(simple[tp])


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    **schema_of(Results),
}
