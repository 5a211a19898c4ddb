"""``results.json``: every run's settings and metrics, the per-study summaries and the
recommendation, under a documented JSON Schema (:data:`SCHEMA`, also in docs/arena.md).

Numbers that do not exist (a diverged run's loss, a target never reached) are ``null``,
never ``NaN``/``Infinity``, so any JSON reader accepts the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMA_ID = "descent.arena/results/1"

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, Any], extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props, "additionalProperties": extra}


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_STATS = _nullable(_obj({"mean": _NUM, "std": _NUM, "min": _NUM, "max": _NUM, "n": _INT}))
_SUMMARY = _obj(
    {
        "train_loss": _STATS,
        "val_loss": _STATS,
        "train_metric": _STATS,
        "val_metric": _STATS,
        "n": _INT,
        "diverged": _INT,
        "reached": _INT,
        "steps_to_target": _nullable(_NUM),
        "time_to_target": _nullable(_NUM),
        "train_time": _nullable(_NUM),
        "score": _nullable(_NUM),
    }
)
_FINAL = _nullable(
    _obj({k: _nullable(_NUM) for k in ("train_loss", "train_metric", "val_loss", "val_metric")})
)
_CURVE = _obj({k: _arr(_nullable(_NUM)) for k in ("step", "train_loss", "val_loss", "val_metric")})
_REGIMES = {"enum": ["full", "minibatch", "sgd"]}
_PHASES = {"enum": ["defaults", "lr", "knob", "tuned"]}

RUN = _obj(
    {
        "id": _STR,
        "task": _STR,
        "regime": _REGIMES,
        "optimizer": _STR,
        "phase": _PHASES,
        "seed": _INT,
        "lr": _NUM,
        "hyper": {"type": "object"},
        "steps": _INT,
        "batch_size": _INT,
        "epochs": _NUM,
        "diverged": _BOOL,
        "final": _FINAL,
        "steps_to_target": _nullable(_INT),
        "time_to_target": _nullable(_NUM),
        "train_time": _nullable(_NUM),
        "curve": _CURVE,
    }
)
STUDY = _obj(
    {
        "task": _STR,
        "regime": _REGIMES,
        "optimizer": _STR,
        "budget": _INT,
        "steps": _INT,
        "lr_grid": _arr(_NUM),
        "knob": _nullable(_obj({"name": _STR, "tried": {"type": "array"}})),
        "best": _obj({"lr": _nullable(_NUM), "hyper": {"type": "object"}, "id": _nullable(_STR)}),
        "defaults": _SUMMARY,
        "tuned": _SUMMARY,
        "sensitivity": _arr(
            _obj({"phase": _PHASES, "lr": _NUM, "hyper": {"type": "object"}, "val_loss": _nullable(_NUM)})
        ),
        "lr_window_decades": _nullable(_NUM),
    }
)
TASK = _obj(
    {
        "name": _STR,
        "title": _STR,
        "description": _STR,
        "metric_name": _STR,
        "higher_is_better": _BOOL,
        "target": _nullable(_NUM),
        "chance": _nullable(_NUM),
        "tags": _arr(_STR),
        "n_train": _INT,
        "n_val": _INT,
        "n_params": _INT,
        "regimes": {
            "type": "object",
            "additionalProperties": _obj({"steps": _INT, "batch_size": _INT, "epochs": _NUM}),
        },
    }
)
OPTIMIZER = _obj(
    {
        "key": _STR,
        "label": _STR,
        "color": _STR,
        "default_lr": _NUM,
        "knob": _nullable(_obj({"name": _STR, "values": {"type": "array"}})),
        "lr_range": _arr(_NUM),
    }
)
_BOARD_ROW = _obj(
    {
        "mean_rank": _NUM,
        "wins": _INT,
        "top": _INT,
        "worst_rank": _NUM,
        "problems": _INT,
        "profile": _arr(_NUM),
    }
)
RECOMMENDATION = _obj(
    {
        "optimizer": _STR,
        "choice": {"type": "object", "additionalProperties": _obj({"tuned": _STR, "defaults": _STR})},
        "leaderboards": {
            "type": "object",
            "additionalProperties": _obj(
                {b: {"type": "object", "additionalProperties": _BOARD_ROW} for b in ("tuned", "defaults")}
            ),
        },
        "taus": _arr(_NUM),
        "problems": _arr(_arr(_STR)),
        "text": _arr(_STR),
    }
)
LANDSCAPE = _obj({"surface": _STR, "title": _STR, "path": _STR, "tuned": {"type": "object"}}, extra=True)

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    **_obj(
        {
            "schema": {"const": SCHEMA_ID},
            "created": _STR,
            "environment": {"type": "object"},
            "settings": _obj(
                {
                    "quick": _BOOL,
                    "tasks": _arr(_STR),
                    "optimizers": _arr(_STR),
                    "budget": {"type": "integer", "minimum": 1},
                    "seeds": {"type": "integer", "minimum": 1},
                    "workers": _INT,
                    "step_scale": _NUM,
                    "rules": {"type": "object"},
                }
            ),
            "tasks": _arr(TASK),
            "optimizers": _arr(OPTIMIZER),
            "runs": _arr(RUN),
            "studies": _arr(STUDY),
            "recommendation": RECOMMENDATION,
            "landscapes": _nullable(_arr(LANDSCAPE)),
            "landscapes_note": _nullable(_STR),
            "timing": _obj(
                {"runs": _INT, "training_s": _NUM, "figures_s": _NUM, "landscapes_s": _NUM, "total_s": _NUM}
            ),
        }
    ),
}


def clean(value: Any) -> Any:
    """JSON-safe: tuples → lists, paths → strings, non-finite floats → None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value


def write(path: Path, results: dict[str, Any]) -> Path:
    path.write_text(json.dumps(clean(results), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
