"""The engine: flat storage, runs, and one fused kernel per run."""

from .engine import AUTO_COMPILE_MIN, Engine
from .kernels import CHUNK, compile_mode, reset, stats
from .storage import ALIGN, Bucket, plan

__all__ = [
    "ALIGN",
    "AUTO_COMPILE_MIN",
    "CHUNK",
    "Bucket",
    "Engine",
    "compile_mode",
    "plan",
    "reset",
    "stats",
]
