"""descent: the optimizers that train neural networks, written once from their rules.

``import descent as optim`` in place of ``import torch.optim as optim``: the same
classes, arguments, ``state_dict`` and numbers, run by a fused flat-storage engine.
torch.optim's optimizers that descent does not rewrite (LBFGS, Rprop, ASGD, SparseAdam)
and its ``lr_scheduler`` and ``swa_utils`` are re-exported unchanged, so the
swap is one import.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch.optim import Optimizer, lr_scheduler, swa_utils

from . import rules
from ._version import __version__ as __version__
from .engine.formats import dequantize_state_dict
from .optim import (
    ADOPT,
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    AdamWScheduleFree,
    EMAMomentum,
    Lion,
    LookaheadNesterov,
    Muon,
    MuonAdamW,
    NAdam,
    RAdam,
    RMSprop,
    RuleOptimizer,
    SGDScheduleFree,
    compose,
    muon_param_groups,
    step_in_backward,
)

#: torch.optim classes re-exported as they are (not run by descent's engine).
_FROM_TORCH = ("ASGD", "LBFGS", "Rprop", "SparseAdam")


def __getattr__(name: str) -> Any:
    if name == "numpy":
        return importlib.import_module(".numpy", __name__)
    if name == "ReshardPlanner":  # (torch.distributed.checkpoint imported only when asked for)
        return importlib.import_module(".checkpoint", __name__).ReshardPlanner
    if name in _FROM_TORCH:
        import torch.optim

        if hasattr(torch.optim, name):
            return getattr(torch.optim, name)
    raise AttributeError(f"module 'descent' has no attribute {name!r}")


__all__ = [
    "ADOPT",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "AdamWScheduleFree",
    "Adamax",
    "EMAMomentum",
    "Lion",
    "LookaheadNesterov",
    "Muon",
    "MuonAdamW",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "ReshardPlanner",
    "RuleOptimizer",
    "SGDScheduleFree",
    "compose",
    "muon_param_groups",
    "dequantize_state_dict",
    "step_in_backward",
    "lr_scheduler",
    "rules",
    "swa_utils",
]
