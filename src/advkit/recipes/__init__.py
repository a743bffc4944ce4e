"""Recipes that combine pruning with attacks, training and evaluation.

The top floor of advkit: :func:`iterative_prune` prunes in steps with a :class:`FineTune` after
each, :func:`robust_prune` runs prune, fine-tune and evaluate in one call, and the robust
importances (:class:`AdversarialTaylor`, :class:`RobustScoreLearner`) score channels with
adversarial examples. They import :mod:`advkit.pruning`, :mod:`advkit.attacks`,
:mod:`advkit.training` and :mod:`advkit.evaluation`; nothing below imports them.
"""

from advkit.recipes.pipeline import ModelSummary, RobustPruneResult, robust_prune, summarize_model
from advkit.recipes.robust_importance import (
    AdversarialTaylor,
    ChannelScores,
    PlannedImportance,
    RobustScoreLearner,
    ScoredNetwork,
    scaled_l1_init,
)
from advkit.recipes.schedule import (
    FineTune,
    PruneStep,
    PruningSchedule,
    iterative_prune,
    plan_widths,
)

__all__ = [
    "AdversarialTaylor",
    "ChannelScores",
    "FineTune",
    "ModelSummary",
    "PlannedImportance",
    "PruneStep",
    "PruningSchedule",
    "RobustPruneResult",
    "RobustScoreLearner",
    "ScoredNetwork",
    "iterative_prune",
    "plan_widths",
    "robust_prune",
    "scaled_l1_init",
    "summarize_model",
]
