"""The rules every optimizer is composed of: the notes' first/second-moment framework.

A named optimizer is a short :class:`Chain` of these; see :func:`descent.compose` for
building a new one.
"""

from .adafactor import FactoredSecondMoment, RelativeStep
from .adaptive import AdaDelta, EMAOfSquares, InfinityNorm, Rectified, SumOfSquares
from .base import Chain, Descend, Hyper, Prepare, Scalars, Transform, read, square
from .momentum import EMA, HeavyBall, LookaheadMomentum, NesterovEMA
from .muon import MuonMomentum, Orthogonalize
from .sign import Lion

__all__ = [
    "EMA",
    "AdaDelta",
    "Chain",
    "Descend",
    "EMAOfSquares",
    "FactoredSecondMoment",
    "HeavyBall",
    "Hyper",
    "InfinityNorm",
    "Lion",
    "LookaheadMomentum",
    "MuonMomentum",
    "NesterovEMA",
    "Orthogonalize",
    "Prepare",
    "Rectified",
    "RelativeStep",
    "Scalars",
    "SumOfSquares",
    "Transform",
    "read",
    "square",
]
