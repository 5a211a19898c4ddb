"""The engine: flat storage, runs, and fused kernel calls over where the data lies.

It knows rule chains, param groups, the state mapping and gradients, nothing above them
(``tests/test_imports.py`` checks that it imports nothing from ``descent.optim``).
"""

from .bucket import Bucket
from .engine import Engine
from .kernels import CHUNK, KERNEL_MIN, compile_mode, reset, stats
from .layout import ALIGN, plan
from .state import StateEditError
from .tracked import TrackedState, tracked_list, tracked_state

__all__ = [
    "ALIGN",
    "CHUNK",
    "Bucket",
    "Engine",
    "KERNEL_MIN",
    "StateEditError",
    "TrackedState",
    "compile_mode",
    "plan",
    "reset",
    "stats",
    "tracked_list",
    "tracked_state",
]
