"""The engine: flat storage, runs, and one fused kernel per run."""

from .engine import Engine
from .kernels import CHUNK, KERNEL_MIN, compile_mode, reset, stats
from .storage import ALIGN, Bucket, plan

__all__ = [
    "ALIGN",
    "CHUNK",
    "Bucket",
    "KERNEL_MIN",
    "Engine",
    "compile_mode",
    "plan",
    "reset",
    "stats",
]
