"""Training objectives: what :class:`~advkit.training.Trainer` minimizes, batch by batch.

:class:`MixedCE` is the default (standard training, or ``(1 - lam) * L(x) + lam * L(x_adv)``);
:class:`TRADES`, :class:`MART`, :class:`FastAT`, :class:`FreeAT` and :class:`AWP` are the
defenses behind most robust models of the literature.
"""

from advkit.training.objectives.awp import AWP
from advkit.training.objectives.base import (
    AdversarialObjective,
    Objective,
    ObjectiveOutput,
    TrainingModel,
)
from advkit.training.objectives.free import FreeAT
from advkit.training.objectives.mart import MART
from advkit.training.objectives.mixed import FastAT, MixedCE
from advkit.training.objectives.smoothing import (
    Consistency,
    GaussianAugmentation,
    SmoothAdv,
    consistency_loss,
)
from advkit.training.objectives.trades import TRADES, InnerPGDObjective

__all__ = [
    "AWP",
    "MART",
    "TRADES",
    "AdversarialObjective",
    "Consistency",
    "FastAT",
    "FreeAT",
    "GaussianAugmentation",
    "InnerPGDObjective",
    "MixedCE",
    "Objective",
    "ObjectiveOutput",
    "SmoothAdv",
    "TrainingModel",
    "consistency_loss",
]
