"""The public optimizer classes."""

from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .adopt import ADOPT
from .base import RuleOptimizer
from .compose import compose
from .inbackward import InBackward, step_in_backward
from .lion import Lion
from .muon import Muon, MuonAdamW, muon_param_groups
from .nadam import NAdam
from .nesterov import LookaheadNesterov
from .radam import RAdam
from .rmsprop import RMSprop
from .schedule_free import AdamWScheduleFree, ScheduleFreeOptimizer, SGDScheduleFree
from .sgd import SGD, EMAMomentum

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
    "InBackward",
    "Lion",
    "LookaheadNesterov",
    "Muon",
    "MuonAdamW",
    "NAdam",
    "RAdam",
    "RMSprop",
    "RuleOptimizer",
    "SGDScheduleFree",
    "ScheduleFreeOptimizer",
    "compose",
    "muon_param_groups",
    "step_in_backward",
]
