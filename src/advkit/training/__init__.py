"""Training: one :class:`Trainer` for standard, fine-tuning and adversarial training.

What it minimizes is an :class:`Objective`: the default :class:`MixedCE` (standard training or
``(1 - lam) * L(x) + lam * L(x_adv)``), :class:`TRADES`, :class:`MART`, :class:`FastAT`,
:class:`FreeAT` or :class:`AWP`, and for randomized smoothing :class:`GaussianAugmentation`,
:class:`SmoothAdv` and :class:`Consistency`. Callbacks hook into the loop (:class:`Callback`,
:class:`EarlyStopping`, :class:`BestCheckpoint`, :class:`OverfittingGuard`); checkpoints are
atomic, load with ``weights_only=True`` and resume exactly.
"""

from advkit.training.callbacks import BestCheckpoint, Callback, EarlyStopping
from advkit.training.checkpoint import load_checkpoint, load_weights, save_checkpoint
from advkit.training.guard import OverfittingGuard
from advkit.training.history import History
from advkit.training.objectives import (
    AWP,
    MART,
    TRADES,
    AdversarialObjective,
    Consistency,
    FastAT,
    FreeAT,
    GaussianAugmentation,
    InnerPGDObjective,
    MixedCE,
    Objective,
    ObjectiveOutput,
    SmoothAdv,
    TrainingModel,
    consistency_loss,
)
from advkit.training.options import OptimizerFactory, SchedulerFactory
from advkit.training.trainer import Trainer

__all__ = [
    "AWP",
    "MART",
    "TRADES",
    "AdversarialObjective",
    "BestCheckpoint",
    "Callback",
    "Consistency",
    "EarlyStopping",
    "FastAT",
    "FreeAT",
    "GaussianAugmentation",
    "History",
    "InnerPGDObjective",
    "MixedCE",
    "Objective",
    "ObjectiveOutput",
    "OptimizerFactory",
    "OverfittingGuard",
    "SchedulerFactory",
    "SmoothAdv",
    "Trainer",
    "TrainingModel",
    "consistency_loss",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
]
