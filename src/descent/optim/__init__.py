"""The public optimizer classes."""

from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .base import RuleOptimizer
from .compose import compose
from .inbackward import InBackward, step_in_backward
from .lion import Lion
from .nadam import NAdam
from .nesterov import LookaheadNesterov
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD, EMAMomentum

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "EMAMomentum",
    "InBackward",
    "Lion",
    "LookaheadNesterov",
    "NAdam",
    "RAdam",
    "RMSprop",
    "RuleOptimizer",
    "compose",
    "step_in_backward",
]
